//! The syncnet operator: reconciles `SyncNetwork` resources into syncnode StatefulSets, runs the
//! spec's faults on the cluster and writes progress and verdicts (stressnet's verdict library)
//! into status. `render`, `state` and `prom` are sans-IO; `controller` is the kube driver.

pub mod controller;
pub mod lease;
pub mod metrics;
pub mod prom;
pub mod rbac;
pub mod render;
pub mod state;
