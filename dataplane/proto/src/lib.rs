//! The gRPC contract of Kordon's data plane (`proto/dataplane.proto`) and the code
//! tonic and prost generate from it. Generated code does not meet the workspace's
//! documentation lints, so they are relaxed in this crate and nowhere else.
#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `kordon.dataplane.v1`
pub mod v1 {
    tonic::include_proto!("kordon.dataplane.v1");
}
