//! Micro benchmark of `PolicyStore::evaluate`: the default roles plus 50 custom policies
//! of the kinds a deployment writes (recipient allowlists, value caps, office hours,
//! label and group scopes, IP and gas forbids, obligations), against 100k mixed requests.
//! Prints a markdown table of per-evaluation latency. No criterion: one run, plain timing.
//!
//! `CARGO_TARGET_DIR=/work/target-policy cargo bench -j1 -p dkms-policy`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dkms_policy::{
    Action, KeyAttrs, PolicyStore, Principal, Request, RequestContext, ResourceKind, SignDetails,
    TxDetails,
};

const REQUESTS: usize = 100_000;
const WARMUP: usize = 2_000;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn addr(i: usize) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    a[19] = 0x42;
    a
}

fn addr_hex(i: usize) -> String {
    let mut s = String::from("0x");
    for b in addr(i) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 50 custom policies.
fn custom_policies() -> String {
    let mut p = String::new();
    // 10 payment bots, each with its own recipient allowlist and value cap.
    for i in 0..10 {
        let list: Vec<String> = (i * 20..i * 20 + 20)
            .map(|a| format!("\"{}\"", addr_hex(a)))
            .collect();
        let _ = writeln!(
            p,
            r#"@id("bot-{i}-allowlist")
@rate_limit("{rate}/hour")
permit (principal in Dkms::Role::"bot-{i}", action == Dkms::Action::"signTx", resource)
when {{
    context.chainId == {chain} &&
    [{list}].contains(context.to) &&
    context.valueGwei <= {cap} &&
    (context.selector == "" || context.selector == "0xa9059cbb")
}};
"#,
            rate = 100 + i,
            chain = 1 + i % 3,
            list = list.join(", "),
            cap = (i + 1) * 1_000_000_000,
        );
    }
    // 10 teams that sign only their own keys, outside production.
    for i in 0..10 {
        let _ = writeln!(
            p,
            r#"@id("team-{i}-keys")
permit (principal in Dkms::Group::"team-{i}", action in [Dkms::Action::"sign", Dkms::Action::"get"], resource)
when {{ resource.labels.contains("team=team-{i}") && !resource.labels.contains("env=prod") }};
"#
        );
    }
    // 10 office-hours signers.
    for i in 0..10 {
        let _ = writeln!(
            p,
            r#"@id("office-hours-{i}")
permit (principal in Dkms::Role::"day-signer-{i}", action == Dkms::Action::"sign", resource)
when {{ context.hourOfDay >= {start} && context.hourOfDay < {end} && context.dayOfWeek <= 4 }};
"#,
            start = 6 + i % 4,
            end = 16 + i % 4,
        );
    }
    // 5 treasury groups with approvals and spend limits.
    for i in 0..5 {
        let _ = writeln!(
            p,
            r#"@id("treasury-{i}")
@requires_approvals("{n}")
@approver_group("treasury-{i}-approvers")
@spend_limit_wei("{limit}/day")
permit (principal in Dkms::Group::"treasury-{i}", action == Dkms::Action::"signTx", resource in Dkms::Group::"treasury-{i}")
when {{ context.valueGwei > 0 }};
"#,
            n = 2 + i % 2,
            limit = (i as u128 + 1) * 10_u128.pow(19),
        );
    }
    // 5 approver groups.
    for i in 0..5 {
        let _ = writeln!(
            p,
            r#"@id("treasury-{i}-approve")
permit (principal in Dkms::Group::"treasury-{i}-approvers", action in [Dkms::Action::"approve", Dkms::Action::"get"], resource in Dkms::Group::"treasury-{i}");
"#
        );
    }
    // 5 forbids that every request runs through.
    p.push_str(
        r#"@id("office-network-signing")
forbid (principal, action in [Dkms::Action::"sign", Dkms::Action::"signTx"], resource)
unless { context.clientIp.isInRange(ip("10.0.0.0/8")) || context.clientIp.isInRange(ip("192.0.2.0/24")) };

@id("gas-cap")
forbid (principal, action == Dkms::Action::"signTx", resource) when { context.gasLimit > 5000000 };

@id("frozen-keys")
forbid (principal, action, resource is Dkms::Key)
when { resource.hasTag("frozen") && resource.getTag("frozen") == "true" && action != Dkms::Action::"get" };

@id("no-mainnet-for-test-keys")
forbid (principal, action == Dkms::Action::"signTx", resource)
when { context.chainId == 1 && resource.labels.contains("env=test") };

@id("hd-paths-only-bip44")
forbid (principal, action in [Dkms::Action::"sign", Dkms::Action::"signTx"], resource)
unless { context.derivationPath == "" || context.derivationPath like "m/44'/*" };
"#,
    );
    // 5 miscellaneous grants.
    p.push_str(
        r#"@id("self-service-delete")
permit (principal, action == Dkms::Action::"delete", resource)
when { principal.roles.contains("self-service") && resource.creator == "self" };

@id("key-creators")
permit (principal in Dkms::Role::"creator", action == Dkms::Action::"generate", resource)
when { resource.keyType == "ECDSA_K1" && !resource.exportable };

@id("backup-bot")
permit (principal in Dkms::Role::"backup-bot", action == Dkms::Action::"backup", resource);

@id("auditors-read-groups")
permit (principal in Dkms::Group::"compliance", action in [Dkms::Action::"readAudit", Dkms::Action::"list"], resource);

@id("night-refresh")
permit (principal in Dkms::Role::"refresher", action == Dkms::Action::"refresh", resource)
when { context.hourOfDay < 4 };
"#,
    );
    p
}

fn request(rng: &mut Rng) -> Request {
    let roles: [&[&str]; 12] = [
        &["admin"],
        &["operator"],
        &["signer"],
        &["approver"],
        &["auditor"],
        &["bot-3"],
        &["bot-7"],
        &["day-signer-2"],
        &[],
        &["self-service"],
        &["creator", "signer"],
        &["backup-bot"],
    ];
    let groups: [&[&str]; 5] = [
        &[],
        &["team-4"],
        &["treasury-1"],
        &["treasury-1-approvers", "compliance"],
        &["team-9", "treasury-3"],
    ];
    let p = Principal::api_key(
        format!("principal-{}", rng.below(1000)),
        roles[rng.below(12)],
    )
    .in_groups(groups[rng.below(5)]);
    // Signing dominates real traffic.
    let action = match rng.below(10) {
        0..=3 => Action::SignTx,
        4..=6 => Action::Sign,
        _ => Action::ALL[rng.below(Action::ALL.len())],
    };
    let mut labels = BTreeMap::new();
    labels.insert("team".to_owned(), format!("team-{}", rng.below(10)));
    labels.insert(
        "env".to_owned(),
        ["dev", "test", "prod"][rng.below(3)].to_owned(),
    );
    if rng.below(20) == 0 {
        labels.insert("frozen".to_owned(), "true".to_owned());
    }
    let key = KeyAttrs {
        id: format!("key-{}", rng.below(10_000)),
        labels,
        group: ["", "treasury-1", "treasury-3"][rng.below(3)].to_owned(),
        key_type: "ECDSA_K1".to_owned(),
        exportable: rng.below(2) == 0,
        creator: "self".to_owned(),
    };
    let ip: IpAddr = if rng.below(10) == 0 {
        IpAddr::from([203, 0, 113, 7])
    } else {
        IpAddr::from([10, 1, 2, 3])
    };
    let mut context = RequestContext::new(1_710_428_966 + rng.below(7 * 86_400) as i64, ip);
    if matches!(action, Action::Sign | Action::SignTx) {
        context.sign = Some(SignDetails {
            digest: vec![0x5a; 32],
            derivation_path: ["", "m/44'/60'/0'/0/1", "m/0/1"][rng.below(3)].to_owned(),
        });
    }
    if action == Action::SignTx {
        context.tx = Some(TxDetails {
            chain_id: 1 + rng.below(3) as u64,
            to: Some(addr(rng.below(220))),
            value_wei: (rng.next() as u128) * 1_000_000,
            selector: [None, Some([0xa9, 0x05, 0x9c, 0xbb])][rng.below(2)],
            gas_limit: 21_000 + rng.below(100_000) as u64,
        });
    }
    Request {
        principal: p,
        action,
        resource: (action.resource_kind() == ResourceKind::Key).then_some(key),
        context,
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn row(name: &str, samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return format!("| {name} | 0 | - | - | - | - |");
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        micros(at(0.5)),
        micros(at(0.99)),
        micros(samples[samples.len() - 1]),
        micros(mean),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let custom = custom_policies();
    let built = Instant::now();
    let store = PolicyStore::new(&custom)?;
    let build_time = built.elapsed();
    let policies = store.policy_ids().len();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let requests: Vec<Request> = (0..REQUESTS).map(|_| request(&mut rng)).collect();
    for r in requests.iter().take(WARMUP) {
        black_box(store.evaluate(r));
    }

    let mut all = Vec::with_capacity(REQUESTS);
    let (mut sign, mut sign_tx, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut allowed, mut with_obligations, mut errors) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for r in &requests {
        let t = Instant::now();
        let d = black_box(store.evaluate(black_box(r)));
        let took = t.elapsed();
        all.push(took);
        match r.action {
            Action::Sign => sign.push(took),
            Action::SignTx => sign_tx.push(took),
            _ => other.push(took),
        }
        allowed += usize::from(d.allowed);
        with_obligations += usize::from(!d.obligations.is_empty());
        errors += usize::from(!d.errors.is_empty());
    }
    let total = started.elapsed();

    println!(
        "\n{policies} policies (6 built-in + {} custom), store built in {:.1} ms; \
         {REQUESTS} requests in {:.2} s ({:.0}/s on one thread); \
         {allowed} allowed, {with_obligations} with obligations, {errors} with errors\n",
        policies - 6,
        build_time.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        REQUESTS as f64 / total.as_secs_f64(),
    );
    println!("| requests | n | p50 µs | p99 µs | max µs | mean µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", row("all", &mut all));
    println!("{}", row("signTx", &mut sign_tx));
    println!("{}", row("sign", &mut sign));
    println!("{}", row("other actions", &mut other));
    Ok(())
}
