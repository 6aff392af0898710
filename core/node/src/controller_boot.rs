//! The controller member before the shards start: its log replayed from
//! `<data>/controller.log` (a torn tail cut off), and — for a node alone, the one voter of
//! its controller — elected, the cluster initialized and the node registered right away, so
//! a single node serves its topics from its first instant as before clusters existed.
//!
//! A node that ran alone before the controller existed kept its metadata in
//! `metadata.json`: the first leader carries it over in the cluster's `InitCluster` command,
//! and the file is renamed `metadata.json.migrated` once the controller holds it.

use std::path::Path;

use quiver_broker::controller_runtime::{new_cluster_id, ClusterSettings, ControllerTask};
use quiver_broker::controller_store::ControllerStore;
use quiver_cluster::command::Command;
use quiver_cluster::controller::Controller;
use quiver_cluster::model::{Metadata, NodeId, NodeMeta};

use crate::run::NodeError;

/// The old single-node metadata file.
pub const LEGACY_METADATA: &str = "metadata.json";
/// Ticks a lone voter may take to elect itself (it needs one election timeout).
const MAX_BOOT_TICKS: usize = 1_000;

/// What the shards start from.
pub struct Booted {
    pub controller: Controller,
    /// The legacy metadata a first leader carries over, when not done at boot.
    pub init_image: Option<Metadata>,
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> NodeError + '_ {
    move |e| NodeError::Setup(format!("{what}: {e}"))
}

fn legacy_image(data_dir: &Path, node: NodeId) -> Result<Option<Metadata>, NodeError> {
    let path = data_dir.join(LEGACY_METADATA);
    match std::fs::read(&path) {
        Ok(bytes) => Metadata::from_json(&bytes, node)
            .map(Some)
            .map_err(NodeError::Setup),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Setup(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Replays the controller log and, for a lone voter, brings the controller to a serving
/// state. Runs on a one-off executor (the store is glommio I/O).
pub fn boot(
    data_dir: &Path,
    me: NodeId,
    settings: &ClusterSettings,
    registration: NodeMeta,
) -> Result<Booted, NodeError> {
    let image = legacy_image(data_dir, me)?;
    let dir = data_dir.to_path_buf();
    let settings = settings.clone();
    let booted = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("quiver-controller-boot")
        .spawn(
            move || async move { boot_on_executor(&dir, me, &settings, registration, image).await },
        )
        .map_err(setup("cannot start the controller boot executor"))?
        .join()
        .map_err(setup("the controller boot stopped"))??;
    if !booted.controller.metadata().cluster_id.is_empty() && booted.init_image.is_none() {
        let legacy = data_dir.join(LEGACY_METADATA);
        if legacy.exists() {
            let kept = data_dir.join(format!("{LEGACY_METADATA}.migrated"));
            std::fs::rename(&legacy, &kept).map_err(setup("cannot rename metadata.json"))?;
            tracing::info!(kept = %kept.display(), "metadata.json carried over into the controller log");
        }
    }
    Ok(booted)
}

async fn boot_on_executor(
    dir: &Path,
    me: NodeId,
    settings: &ClusterSettings,
    registration: NodeMeta,
    image: Option<Metadata>,
) -> Result<Booted, NodeError> {
    let (mut store, recovered) = ControllerStore::open(dir)
        .await
        .map_err(setup("cannot open the controller log"))?;
    if let Some(why) = &recovered.stopped {
        tracing::warn!("controller log: cut a damaged tail ({why})");
    }
    let mut controller =
        Controller::from_log(settings.raft_config(me), recovered.hard, recovered.log, "")
            .map_err(setup("cannot start the controller"))?;
    let lone = settings.is_single_voter(me);
    let mut image = image;
    if lone {
        let mut sends = Vec::new();
        let mut ticks = 0;
        while !controller.is_leader() {
            ticks += 1;
            if ticks > MAX_BOOT_TICKS {
                return Err(NodeError::Setup(format!(
                    "the controller did not elect this lone node within {MAX_BOOT_TICKS} ticks; its log may belong to a cluster of several voters: pass the same seeds as before"
                )));
            }
            let actions = controller.tick();
            settle(&mut controller, &mut store, actions, &mut sends).await?;
        }
        // The leader's first entry commits once durable: everything before it applies.
        settle(&mut controller, &mut store, Vec::new(), &mut sends).await?;
        if controller.metadata().cluster_id.is_empty() {
            let image = image.take().unwrap_or_else(|| Metadata {
                cluster_id: new_cluster_id(),
                ..Metadata::default()
            });
            propose(
                &mut controller,
                &mut store,
                Command::InitCluster {
                    image: Box::new(image),
                },
            )
            .await?;
        }
        if controller.metadata().nodes.get(&me) != Some(&registration) {
            propose(
                &mut controller,
                &mut store,
                Command::RegisterNode {
                    node: me,
                    meta: registration,
                },
            )
            .await?;
        }
        controller.take_outcomes();
    }
    let _ = store.close().await;
    Ok(Booted {
        controller,
        init_image: image,
    })
}

async fn settle(
    controller: &mut Controller,
    store: &mut ControllerStore,
    actions: Vec<quiver_raft::Action>,
    sends: &mut Vec<(u64, quiver_raft::Message)>,
) -> Result<(), NodeError> {
    ControllerTask::settle(controller, store, actions, sends)
        .await
        .map_err(setup("cannot write the controller log"))
}

async fn propose(
    controller: &mut Controller,
    store: &mut ControllerStore,
    command: Command,
) -> Result<(), NodeError> {
    let (index, actions) = controller
        .propose(&command)
        .map_err(setup("the controller refused a start-up change"))?;
    settle(controller, store, actions, &mut Vec::new()).await?;
    if controller.applied() < index {
        return Err(NodeError::Setup(
            "a lone controller did not apply its own change: report this as a bug".into(),
        ));
    }
    Ok(())
}
