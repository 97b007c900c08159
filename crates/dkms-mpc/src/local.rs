//! An in-process driver: all parties of a session in one thread, for tests and benchmarks.
//!
//! Messages are delivered last-in first-out, so a party regularly sees a later round's
//! message before an earlier one, which exercises the sessions' buffering.

use crate::{MpcError, Outgoing, PartyIndex, Progress, Session, SessionOutput};
use std::collections::BTreeMap;

/// What the interceptor of [`run_local_with`] wants done with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Deliver,
    Drop,
}

/// Runs `sessions` (each with its party index) until all are done; outputs in input order.
/// For keygen pass every party; for signing pass the signers' sessions.
pub fn run_local(
    sessions: Vec<(PartyIndex, Box<dyn Session>)>,
) -> Result<Vec<SessionOutput>, MpcError> {
    run_local_with(sessions, |_, _| Delivery::Deliver)
}

/// Like [`run_local`], but every message passes `intercept(from, &mut message)` first, which
/// may alter or drop it: the hook for misbehaving-party tests. The first error any session
/// returns ends the run.
pub fn run_local_with(
    mut sessions: Vec<(PartyIndex, Box<dyn Session>)>,
    mut intercept: impl FnMut(PartyIndex, &mut Outgoing) -> Delivery,
) -> Result<Vec<SessionOutput>, MpcError> {
    let mut slot = BTreeMap::new();
    for (i, (party, _)) in sessions.iter().enumerate() {
        if slot.insert(*party, i).is_some() {
            return Err(MpcError::BadParameters(format!(
                "party {party} given twice"
            )));
        }
    }
    let mut outputs: Vec<Option<SessionOutput>> = sessions.iter().map(|_| None).collect();
    let mut queue: Vec<(PartyIndex, Outgoing)> = Vec::new();
    for (party, session) in &mut sessions {
        for msg in session.start()? {
            queue.push((*party, msg));
        }
    }
    while let Some((from, mut msg)) = queue.pop() {
        if intercept(from, &mut msg) == Delivery::Drop {
            continue;
        }
        let &i = slot.get(&msg.to).ok_or_else(|| {
            MpcError::Internal(format!("party {from} sent to absent party {}", msg.to))
        })?;
        let (to, session) = &mut sessions[i];
        match session.receive(from, msg.round, &msg.payload)? {
            Progress::Continue(out) => queue.extend(out.into_iter().map(|m| (*to, m))),
            Progress::Done { output, outgoing } => {
                outputs[i] = Some(output);
                queue.extend(outgoing.into_iter().map(|m| (*to, m)));
            }
        }
    }
    let mut done = Vec::with_capacity(outputs.len());
    for ((party, session), output) in sessions.iter().zip(outputs) {
        match output {
            Some(o) => done.push(o),
            None => {
                return Err(MpcError::Internal(format!(
                    "party {party} stalled, waiting for {:?}",
                    session.waiting_for()
                )));
            }
        }
    }
    Ok(done)
}
