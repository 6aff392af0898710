//! Conveniences for reading responses.

use crate::wire;

impl<'a> wire::ProduceResponse<'a> {
    /// The entry of a one-partition produce (as [`crate::requests::produce`] sends).
    pub fn single(&self) -> Option<wire::ProducePartitionResponse<'a>> {
        self.partitions().filter(|p| p.len() == 1).map(|p| p.get(0))
    }
}

impl<'a> wire::FetchResponse<'a> {
    /// The entry of a one-partition fetch (as [`crate::requests::fetch`] sends).
    pub fn single(&self) -> Option<wire::FetchPartitionResponse<'a>> {
        self.partitions().filter(|p| p.len() == 1).map(|p| p.get(0))
    }
}
