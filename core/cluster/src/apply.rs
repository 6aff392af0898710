//! The controller's state machine: applies a [`Command`] to the [`Metadata`], all or nothing,
//! deterministically (every node applies the same log to the same result).

use crate::command::{Command, CommandError, PartitionMove};
use crate::model::{Metadata, NodeId, PartitionMeta};

fn check_replicas(meta: &Metadata, replicas: &[NodeId]) -> Result<(), CommandError> {
    if replicas.is_empty() {
        return Err(CommandError::InvalidReplicas("no replica".into()));
    }
    for (k, r) in replicas.iter().enumerate() {
        if replicas[..k].contains(r) {
            return Err(CommandError::InvalidReplicas(format!(
                "node {r} is listed twice"
            )));
        }
        if !meta.nodes.contains_key(r) {
            return Err(CommandError::UnknownNode(*r));
        }
    }
    Ok(())
}

fn check_partitions(meta: &Metadata, parts: &[PartitionMeta]) -> Result<(), CommandError> {
    for p in parts {
        check_replicas(meta, &p.replicas)?;
        if !p.replicas.contains(&p.leader) {
            return Err(CommandError::LeaderNotReplica { leader: p.leader });
        }
    }
    Ok(())
}

fn partition_mut<'a>(
    meta: &'a mut Metadata,
    topic: &str,
    partition: i32,
) -> Result<&'a mut PartitionMeta, CommandError> {
    let t = meta
        .topics
        .get_mut(topic)
        .ok_or_else(|| CommandError::UnknownTopic(topic.to_string()))?;
    usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get_mut(i))
        .ok_or_else(|| CommandError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
}

fn same_nodes(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|n| b.contains(n))
}

/// A move to `target` is valid: distinct registered nodes, none decommissioned (unless it
/// holds the replica already), and a replicated partition staying replicated.
fn check_move(
    meta: &Metadata,
    topic: &str,
    partition: i32,
    target: &[NodeId],
) -> Result<(), CommandError> {
    check_replicas(meta, target)?;
    let p =
        meta.partition(topic, partition)
            .ok_or_else(|| match meta.topics.contains_key(topic) {
                true => CommandError::UnknownPartition {
                    topic: topic.to_string(),
                    partition,
                },
                false => CommandError::UnknownTopic(topic.to_string()),
            })?;
    if p.replicas.len() < 2 || target.len() < 2 {
        return Err(CommandError::NotReplicated {
            topic: topic.to_string(),
            partition,
        });
    }
    if let Some(running) = &p.target {
        return Err(CommandError::MoveInProgress {
            topic: topic.to_string(),
            partition,
            target: running.clone(),
        });
    }
    for n in target {
        if !p.replicas.contains(n) && meta.nodes.get(n).is_some_and(|m| m.decommissioned) {
            return Err(CommandError::Decommissioned(*n));
        }
    }
    Ok(())
}

fn start_move(p: &mut PartitionMeta, target: &[NodeId]) {
    if same_nodes(&p.replicas, target) {
        p.replicas = target.to_vec();
        p.target = None;
    } else {
        p.target = Some(target.to_vec());
    }
}

/// Applies `cmd`: the metadata's next version, or why not (then it is unchanged).
pub fn apply(meta: &mut Metadata, cmd: &Command) -> Result<(), CommandError> {
    match cmd {
        Command::InitCluster { image } => {
            if !meta.cluster_id.is_empty() {
                return Err(CommandError::AlreadyInitialized {
                    cluster_id: meta.cluster_id.clone(),
                });
            }
            if image.cluster_id.is_empty() {
                return Err(CommandError::Malformed("the cluster id is empty".into()));
            }
            let version = meta.version;
            *meta = (**image).clone();
            meta.version = meta.version.max(version);
        }
        Command::RegisterNode { node, meta: m } => {
            // Registering again (a restart) keeps a decommission.
            let decommissioned = meta.nodes.get(node).is_some_and(|n| n.decommissioned);
            let mut m = m.clone();
            m.decommissioned |= decommissioned;
            meta.nodes.insert(*node, m);
        }
        Command::UnregisterNode { node } => {
            if !meta.nodes.contains_key(node) {
                return Err(CommandError::UnknownNode(*node));
            }
            let replicas = meta
                .topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.hosted_by(*node))
                .count();
            if replicas > 0 {
                return Err(CommandError::NodeHasReplicas {
                    node: *node,
                    replicas,
                });
            }
            meta.nodes.remove(node);
        }
        Command::CreateTopic {
            name,
            partitions,
            configs,
        } => {
            if meta.topics.contains_key(name) {
                return Err(CommandError::TopicExists(name.clone()));
            }
            if partitions.is_empty() {
                return Err(CommandError::NoPartitions);
            }
            check_partitions(meta, partitions)?;
            let mut t = crate::model::TopicMeta::new(partitions.clone(), configs.clone());
            t.id = meta.version + 1;
            meta.topics.insert(name.clone(), t);
        }
        Command::DeleteTopic { name } => {
            if meta.topics.remove(name).is_none() {
                return Err(CommandError::UnknownTopic(name.clone()));
            }
        }
        Command::AlterTopicConfigs { name, set, unset } => {
            let t = meta
                .topics
                .get_mut(name)
                .ok_or_else(|| CommandError::UnknownTopic(name.clone()))?;
            for k in unset {
                t.configs.remove(k);
            }
            t.configs
                .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Command::CreatePartitions { name, added } => {
            if !meta.topics.contains_key(name) {
                return Err(CommandError::UnknownTopic(name.clone()));
            }
            if added.is_empty() {
                return Err(CommandError::NoPartitions);
            }
            check_partitions(meta, added)?;
            if let Some(t) = meta.topics.get_mut(name) {
                t.partitions.extend(added.iter().cloned());
            }
        }
        Command::SetLeader {
            topic,
            partition,
            leader,
            leader_epoch,
        } => {
            let p = partition_mut(meta, topic, *partition)?;
            if *leader_epoch < p.leader_epoch {
                return Err(CommandError::StaleEpoch {
                    recorded: p.leader_epoch,
                    proposed: *leader_epoch,
                });
            }
            // During a move, a replica being added may be elected.
            if !p.hosted_by(*leader) {
                return Err(CommandError::LeaderNotReplica { leader: *leader });
            }
            p.leader = *leader;
            p.leader_epoch = *leader_epoch;
        }
        Command::SetReplicas {
            topic,
            partition,
            replicas,
        } => {
            check_replicas(meta, replicas)?;
            let p = partition_mut(meta, topic, *partition)?;
            if !replicas.contains(&p.leader) {
                return Err(CommandError::LeaderNotReplica { leader: p.leader });
            }
            if p.target.as_ref().is_some_and(|t| same_nodes(t, replicas)) {
                // The move is done: the target's order (its preferred leader) holds.
                p.replicas = p.target.take().unwrap_or_default();
            } else {
                p.replicas = replicas.clone();
            }
        }
        Command::MovePartition {
            topic,
            partition,
            target,
        } => {
            check_move(meta, topic, *partition, target)?;
            start_move(partition_mut(meta, topic, *partition)?, target);
        }
        Command::DecommissionNode { node, moves } => {
            if !meta.nodes.contains_key(node) {
                return Err(CommandError::UnknownNode(*node));
            }
            for PartitionMove {
                topic,
                partition,
                target,
            } in moves
            {
                if target.contains(node) {
                    return Err(CommandError::Decommissioned(*node));
                }
                check_move(meta, topic, *partition, target)?;
            }
            for m in moves {
                start_move(partition_mut(meta, &m.topic, m.partition)?, &m.target);
            }
            if let Some(n) = meta.nodes.get_mut(node) {
                n.decommissioned = true;
            }
        }
    }
    meta.version += 1;
    Ok(())
}
