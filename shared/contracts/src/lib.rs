//! The gRPC contracts: messages, clients and servers generated from `proto/`.
//!
//! Only generated code lives here; conversions to domain types belong to the service that
//! does the converting.

/// Package `orders.v1`.
pub mod orders {
    /// Version 1 of the order system's API.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("orders.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orders_descriptor");
