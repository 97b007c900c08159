//! Node regions and node groups: `pod/setRegion` and the `group/*` endpoints, and the
//! part of key/gen that takes a group's members instead of a participant list.
//!
//! A group may require its members to span some number of distinct regions, so that one
//! site going down (or being seized) cannot take a threshold of shares with it. Regions can
//! change after a group is made, so key/gen checks the spread again with the nodes'
//! current regions.

use super::{KeygenPlan, MAX_PARTIES, ok, plan_key, rfc3339};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::extract::State;
use dkms_proto::api::{
    Envelope, GroupNameRequest, KeyGenRequest, NodeGroupInfo, NodeGroupRequest, PodInfo,
    SetRegionRequest,
};
use dkms_proto::{ErrorCode, GroupName, NodeTag, Region};
use dkms_store::{NodeGroupRow, NodeRow, StoreError};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Longest group description, as for keys.
const MAX_DESCRIPTION: usize = 1024;

fn group_not_found(name: &GroupName) -> ApiError {
    ApiError::new(
        ErrorCode::GroupNotFound,
        format!("no node group named {name}"),
    )
}

fn parse_name(raw: &str, field: &str) -> ApiResult<GroupName> {
    raw.parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("{field}: {e}")))
}

/// Tag → region of every registered node.
fn region_map(nodes: &[NodeRow]) -> BTreeMap<&str, &str> {
    nodes
        .iter()
        .map(|n| (n.tag.as_str(), n.region.as_str()))
        .collect()
}

/// The distinct non-empty regions `members` are in, sorted.
fn spread(members: &[String], regions: &BTreeMap<&str, &str>) -> BTreeSet<String> {
    members
        .iter()
        .filter_map(|m| regions.get(m.as_str()))
        .filter(|r| !r.is_empty())
        .map(|r| (*r).to_owned())
        .collect()
}

/// Refuses `members` unless they span `min_regions` distinct regions; the message names
/// the regions found and where each member is, so the operator knows what to move.
fn check_spread(
    what: &str,
    members: &[String],
    min_regions: u8,
    regions: &BTreeMap<&str, &str>,
) -> ApiResult<()> {
    let found = spread(members, regions);
    if found.len() >= usize::from(min_regions) {
        return Ok(());
    }
    let listed = if found.is_empty() {
        "none".to_owned()
    } else {
        found.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    let placement = members
        .iter()
        .map(|m| match regions.get(m.as_str()) {
            Some(r) if !r.is_empty() => format!("{m}={r}"),
            _ => format!("{m}=(no region)"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApiError::invalid(format!(
        "{what} needs its members in at least {min_regions} distinct regions, but they are in \
         {}: {listed} ({placement}); set node regions with pod/setRegion",
        found.len()
    )))
}

/// A group request that passed every check that needs no database.
struct GroupPlan {
    name: GroupName,
    members: Vec<String>,
    threshold: u8,
    min_regions: u8,
    description: String,
}

fn plan_group(req: &NodeGroupRequest) -> ApiResult<GroupPlan> {
    let name = parse_name(&req.name, "name")?;
    let mut members = Vec::with_capacity(req.members.len());
    let mut seen = HashSet::new();
    for (i, raw) in req.members.iter().enumerate() {
        let tag: NodeTag = raw
            .parse()
            .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("members[{i}]: {e}")))?;
        if !seen.insert(tag.clone()) {
            return Err(ApiError::invalid(format!(
                "members lists node {tag} more than once; each share needs its own node"
            )));
        }
        members.push(tag.to_string());
    }
    let n = members.len();
    if n < 2 {
        return Err(ApiError::invalid(format!(
            "members must name at least 2 nodes, got {n}"
        )));
    }
    if n > MAX_PARTIES {
        return Err(ApiError::invalid(format!(
            "members may name at most {MAX_PARTIES} nodes, got {n}"
        )));
    }
    super::check_threshold(req.threshold, n, "the number of members")?;
    let min_regions = req.min_regions.unwrap_or(0);
    if !(0..=n as i64).contains(&min_regions) {
        return Err(ApiError::invalid(format!(
            "minRegions must be 0 to {n} (the number of members), got {min_regions}"
        )));
    }
    let description = req.description.clone().unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    // Both fit: n ≤ MAX_PARTIES.
    let small = |v: i64| u8::try_from(v).map_err(|_| ApiError::invalid("value out of range"));
    Ok(GroupPlan {
        name,
        members,
        threshold: small(req.threshold)?,
        min_regions: small(min_regions)?,
        description,
    })
}

/// Checks a planned group against the registered nodes and their regions.
fn check_members(plan: &GroupPlan, nodes: &[NodeRow]) -> ApiResult<()> {
    let regions = region_map(nodes);
    if let Some(m) = plan
        .members
        .iter()
        .find(|m| !regions.contains_key(m.as_str()))
    {
        return Err(ApiError::new(
            ErrorCode::NodeNotFound,
            format!("members: unknown node tag {m}; register it with pod/createPod first"),
        ));
    }
    check_spread(
        &format!("minRegions {}", plan.min_regions),
        &plan.members,
        plan.min_regions,
        &regions,
    )
}

fn group_info(g: NodeGroupRow, nodes: &[NodeRow]) -> NodeGroupInfo {
    let regions = spread(&g.members, &region_map(nodes));
    NodeGroupInfo {
        name: g.name,
        members: g.members,
        threshold: g.threshold,
        total_shares: g.total_shares,
        min_regions: g.min_regions,
        regions: regions.into_iter().collect(),
        description: g.description,
        created_at: rfc3339(g.created_at),
        updated_at: rfc3339(g.updated_at),
    }
}

/// Store errors of a group write, in the user's terms.
fn write_error(e: StoreError, name: &GroupName) -> ApiError {
    match e {
        StoreError::Conflict => ApiError::new(
            ErrorCode::Conflict,
            format!("a node group named {name} already exists"),
        ),
        StoreError::UnknownNode(tag) => ApiError::new(
            ErrorCode::NodeNotFound,
            format!("members: unknown node tag {tag}; register it with pod/createPod first"),
        ),
        other => other.into(),
    }
}

/// The group as stored now, for the answer of a write.
async fn reload(state: &AppState, name: &GroupName) -> ApiResult<Json<Envelope<NodeGroupInfo>>> {
    let g = state
        .store
        .get_node_group(name.as_str())
        .await?
        .ok_or_else(|| group_not_found(name))?;
    let nodes = state.store.list_nodes().await?;
    Ok(ok(group_info(g, &nodes)))
}

fn row(plan: GroupPlan, now: i64) -> NodeGroupRow {
    NodeGroupRow {
        name: plan.name.to_string(),
        threshold: plan.threshold,
        // ≤ MAX_PARTIES, checked by plan_group.
        total_shares: u8::try_from(plan.members.len()).unwrap_or(u8::MAX),
        min_regions: plan.min_regions,
        description: plan.description,
        members: plan.members,
        created_at: now,
        updated_at: now,
    }
}

/// `POST /api/mappic/pod/setRegion`
pub(super) async fn set_region(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SetRegionRequest>,
) -> ApiResult<Json<Envelope<PodInfo>>> {
    let tag: NodeTag = req
        .node_tag
        .parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("nodeTag: {e}")))?;
    let region: Region = req
        .region
        .parse()
        .map_err(|e: dkms_proto::ParseError| ApiError::invalid(format!("region: {e}")))?;
    if !state
        .store
        .set_node_region(tag.as_str(), region.as_str(), state.clock.now_ms())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NodeNotFound,
            format!("unknown node tag {tag}"),
        ));
    }
    tracing::info!(node = %tag, region = %region, "node region set");
    let node =
        state.store.get_node(tag.as_str()).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::NodeNotFound, format!("unknown node tag {tag}"))
        })?;
    let connected = state.hub.connected().contains(&tag);
    Ok(ok(super::pod_info(node, connected)))
}

/// `POST /api/mappic/group/create`
pub(super) async fn group_create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NodeGroupRequest>,
) -> ApiResult<Json<Envelope<NodeGroupInfo>>> {
    let plan = plan_group(&req)?;
    check_members(&plan, &state.store.list_nodes().await?)?;
    let name = plan.name.clone();
    state
        .store
        .insert_node_group(&row(plan, state.clock.now_ms()))
        .await
        .map_err(|e| write_error(e, &name))?;
    tracing::info!(group = %name, "node group created");
    reload(&state, &name).await
}

/// `POST /api/mappic/group/update`: replaces members, threshold, minRegions and
/// description. Keys already made from the group keep their own participants.
pub(super) async fn group_update(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NodeGroupRequest>,
) -> ApiResult<Json<Envelope<NodeGroupInfo>>> {
    let plan = plan_group(&req)?;
    if state
        .store
        .get_node_group(plan.name.as_str())
        .await?
        .is_none()
    {
        return Err(group_not_found(&plan.name));
    }
    check_members(&plan, &state.store.list_nodes().await?)?;
    let name = plan.name.clone();
    let found = state
        .store
        .update_node_group(&row(plan, state.clock.now_ms()))
        .await
        .map_err(|e| write_error(e, &name))?;
    if !found {
        return Err(group_not_found(&name));
    }
    tracing::info!(group = %name, "node group updated");
    reload(&state, &name).await
}

#[derive(Deserialize)]
pub(super) struct GroupQuery {
    name: Option<String>,
}

/// `GET /api/mappic/group/get?name=...`
pub(super) async fn group_get(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GroupQuery>,
) -> ApiResult<Json<Envelope<NodeGroupInfo>>> {
    let raw = q
        .name
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let name = parse_name(raw, "name")?;
    reload(&state, &name).await
}

/// `GET /api/mappic/group/list`: every group, by name.
pub(super) async fn group_list(
    State(state): State<AppState>,
) -> ApiResult<Json<Envelope<Vec<NodeGroupInfo>>>> {
    let groups = state.store.list_node_groups().await?;
    let nodes = state.store.list_nodes().await?;
    Ok(ok(groups
        .into_iter()
        .map(|g| group_info(g, &nodes))
        .collect()))
}

/// `POST /api/mappic/group/delete`: refused while keys made from the group are in use.
pub(super) async fn group_delete(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GroupNameRequest>,
) -> ApiResult<Json<Envelope<String>>> {
    let name = parse_name(&req.name, "name")?;
    match state
        .store
        .delete_node_group(name.as_str(), state.clock.now_ms())
        .await
    {
        Ok(true) => {
            tracing::info!(group = %name, "node group deleted");
            Ok(ok(name.to_string()))
        }
        Ok(false) => Err(group_not_found(&name)),
        Err(StoreError::GroupInUse {
            count, examples, ..
        }) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "node group {name} is used by {count} key(s) that are not deleted (e.g. {}); \
                 delete those keys first",
                examples.join(", ")
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The key/gen plan of a request that names a node group: the group's members in order,
/// its threshold (a `threshold` or `totalShares` in the request must match the group's),
/// and its region requirement checked against the nodes' regions now.
pub(super) async fn plan_group_keygen(
    state: &AppState,
    req: &KeyGenRequest,
    raw: &str,
) -> ApiResult<(KeygenPlan, GroupName)> {
    if !req.service_participants.is_empty() {
        return Err(ApiError::invalid(
            "give either nodeGroup or serviceParticipants, not both",
        ));
    }
    let name = parse_name(raw, "nodeGroup")?;
    let group = state
        .store
        .get_node_group(name.as_str())
        .await?
        .ok_or_else(|| group_not_found(&name))?;
    if let Some(t) = req.threshold
        && t != i64::from(group.threshold)
    {
        return Err(ApiError::invalid(format!(
            "threshold {t} does not match node group {name}, whose threshold is {}; omit \
             threshold to use the group's",
            group.threshold
        )));
    }
    if let Some(n) = req.total_shares
        && n != i64::from(group.total_shares)
    {
        return Err(ApiError::invalid(format!(
            "totalShares {n} does not match node group {name}, which has {} members; omit \
             totalShares to use the group's",
            group.total_shares
        )));
    }
    let plan = plan_key(
        &req.key_params,
        &group.members,
        i64::from(group.threshold),
        i64::from(group.total_shares),
    )?;
    let nodes = state.store.list_nodes().await?;
    check_spread(
        &format!("node group {name}"),
        &group.members,
        group.min_regions,
        &region_map(&nodes),
    )?;
    Ok((plan, name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn req(members: &[&str], threshold: i64, min_regions: Option<i64>) -> NodeGroupRequest {
        NodeGroupRequest {
            name: "g".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            threshold,
            min_regions,
            description: None,
        }
    }

    fn node(tag: &str, region: &str) -> NodeRow {
        NodeRow {
            tag: tag.into(),
            status: dkms_store::NODE_ACTIVE.into(),
            join_token_hash: None,
            signing_key: None,
            encryption_key: None,
            region: region.into(),
            created_at: 0,
        }
    }

    fn refused(r: ApiResult<impl Sized>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidParameter, "{}", e.message);
                e.message
            }
        }
    }

    #[test]
    fn common_shapes_are_accepted() {
        for (n, t) in [(3, 2), (7, 5), (9, 5), (2, 2)] {
            let tags: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let p = plan_group(&req(&tags, t, None)).unwrap();
            assert_eq!((p.members.len(), i64::from(p.threshold)), (n, t));
            assert_eq!(p.min_regions, 0);
        }
    }

    #[test]
    fn bad_groups_are_refused_with_the_reason() {
        let mut bad_name = req(&["a", "b"], 2, None);
        bad_name.name = "no good".into();
        assert!(refused(plan_group(&bad_name)).starts_with("name:"));
        assert!(refused(plan_group(&req(&["a", "a b"], 2, None))).contains("members[1]"));
        assert!(refused(plan_group(&req(&["a", "a"], 2, None))).contains("more than once"));
        assert!(refused(plan_group(&req(&["a"], 2, None))).contains("at least 2 nodes"));
        assert!(refused(plan_group(&req(&["a", "b"], 1, None))).contains("at least 2"));
        assert!(refused(plan_group(&req(&["a", "b"], 3, None))).contains("greater than"));
        assert!(refused(plan_group(&req(&["a", "b"], 2, Some(3)))).contains("minRegions"));
        assert!(refused(plan_group(&req(&["a", "b"], 2, Some(-1)))).contains("minRegions"));
        let mut long = req(&["a", "b"], 2, None);
        long.description = Some("x".repeat(1025));
        assert!(refused(plan_group(&long)).contains("description"));
    }

    #[test]
    fn region_spread_names_what_it_found() {
        let nodes = [node("a", "eu"), node("b", "eu"), node("c", "")];
        let plan = plan_group(&req(&["a", "b", "c"], 2, Some(2))).unwrap();
        let msg = refused(check_members(&plan, &nodes));
        assert!(
            msg.contains("at least 2") && msg.contains("in 1: eu"),
            "{msg}"
        );
        assert!(msg.contains("c=(no region)"), "{msg}");
        let spread_out = [node("a", "eu"), node("b", "us"), node("c", "")];
        check_members(&plan, &spread_out).unwrap();
        let none = [node("a", ""), node("b", ""), node("c", "")];
        assert!(refused(check_members(&plan, &none)).contains("in 0: none"));
        let unknown = plan_group(&req(&["a", "zz"], 2, None)).unwrap();
        let e = check_members(&unknown, &nodes).unwrap_err();
        assert_eq!(e.code, ErrorCode::NodeNotFound);
        assert!(e.message.contains("zz"));
    }
}
