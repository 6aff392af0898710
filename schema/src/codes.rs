//! The FlatBuffers protocol's codes for the broker's names: APIs, error codes, acks.

use quiver_broker_api::{Acks, Api, ErrorCode};

use crate::wire;

/// The wire key of an API.
pub fn wire_api(api: Api) -> wire::ApiKey {
    match api {
        Api::Handshake => wire::ApiKey::Handshake,
        Api::Metadata => wire::ApiKey::Metadata,
        Api::CreateTopics => wire::ApiKey::CreateTopics,
        Api::DeleteTopics => wire::ApiKey::DeleteTopics,
        Api::DescribeConfigs => wire::ApiKey::DescribeConfigs,
        Api::AlterConfigs => wire::ApiKey::AlterConfigs,
        Api::ListOffsets => wire::ApiKey::ListOffsets,
        Api::Produce => wire::ApiKey::Produce,
        Api::Fetch => wire::ApiKey::Fetch,
        Api::ConsumerGroupHeartbeat => wire::ApiKey::ConsumerGroupHeartbeat,
        Api::OffsetCommit => wire::ApiKey::OffsetCommit,
        Api::OffsetFetch => wire::ApiKey::OffsetFetch,
        Api::ListGroups => wire::ApiKey::ListGroups,
        Api::DescribeGroup => wire::ApiKey::DescribeGroup,
        Api::DeleteGroup => wire::ApiKey::DeleteGroup,
        Api::AlterGroupConfig => wire::ApiKey::AlterGroupConfig,
        Api::Nack => wire::ApiKey::Nack,
        Api::InitProducerId => wire::ApiKey::InitProducerId,
        Api::AddOffsetsToTxn => wire::ApiKey::AddOffsetsToTxn,
        Api::EndTxn => wire::ApiKey::EndTxn,
        Api::AlterReplicas => wire::ApiKey::AlterReplicas,
        Api::DecommissionNode => wire::ApiKey::DecommissionNode,
        Api::DescribeReplication => wire::ApiKey::DescribeReplication,
    }
}

/// The wire code of an error.
pub fn wire_code(code: ErrorCode) -> wire::ErrorCode {
    match code {
        ErrorCode::Unknown => wire::ErrorCode::Unknown,
        ErrorCode::MalformedRequest => wire::ErrorCode::MalformedRequest,
        ErrorCode::UnsupportedVersion => wire::ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownApi => wire::ErrorCode::UnknownApi,
        ErrorCode::FrameTooLarge => wire::ErrorCode::FrameTooLarge,
        ErrorCode::UnknownTopic => wire::ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition => wire::ErrorCode::UnknownPartition,
        ErrorCode::NotOwner => wire::ErrorCode::NotOwner,
        ErrorCode::TopicExists => wire::ErrorCode::TopicExists,
        ErrorCode::InvalidTopicName => wire::ErrorCode::InvalidTopicName,
        ErrorCode::InvalidConfig => wire::ErrorCode::InvalidConfig,
        ErrorCode::InvalidBatch => wire::ErrorCode::InvalidBatch,
        ErrorCode::CorruptData => wire::ErrorCode::CorruptData,
        ErrorCode::OffsetOutOfRange => wire::ErrorCode::OffsetOutOfRange,
        ErrorCode::DiskFull => wire::ErrorCode::DiskFull,
        ErrorCode::StorageError => wire::ErrorCode::StorageError,
        ErrorCode::Timeout => wire::ErrorCode::Timeout,
        ErrorCode::TooManyRequests => wire::ErrorCode::TooManyRequests,
        ErrorCode::ShuttingDown => wire::ErrorCode::ShuttingDown,
        ErrorCode::InvalidRequest => wire::ErrorCode::InvalidRequest,
        ErrorCode::FencedMemberEpoch => wire::ErrorCode::FencedMemberEpoch,
        ErrorCode::UnknownMemberId => wire::ErrorCode::UnknownMemberId,
        ErrorCode::StaleGeneration => wire::ErrorCode::StaleGeneration,
        ErrorCode::UnknownGroup => wire::ErrorCode::UnknownGroup,
        ErrorCode::UnassignedPartition => wire::ErrorCode::UnassignedPartition,
        ErrorCode::GroupNotEmpty => wire::ErrorCode::GroupNotEmpty,
        ErrorCode::LimitExceeded => wire::ErrorCode::LimitExceeded,
        ErrorCode::CoordinatorLoading => wire::ErrorCode::CoordinatorLoading,
        ErrorCode::OutOfOrderSequence => wire::ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced => wire::ErrorCode::ProducerFenced,
        ErrorCode::InvalidTxnState => wire::ErrorCode::InvalidTxnState,
        ErrorCode::ConcurrentTransactions => wire::ErrorCode::ConcurrentTransactions,
        ErrorCode::InvalidProducerIdMapping => wire::ErrorCode::InvalidProducerIdMapping,
        ErrorCode::TransactionAborted => wire::ErrorCode::TransactionAborted,
    }
}

/// The broker's API for a wire key; `None` for a key this build does not know.
pub fn broker_api(key: wire::ApiKey) -> Option<Api> {
    ALL_APIS.iter().copied().find(|a| wire_api(*a) == key)
}

/// The broker's error code for a wire code (`Unknown` for one this build does not know).
pub fn broker_code(code: wire::ErrorCode) -> ErrorCode {
    ErrorCode::ALL
        .iter()
        .copied()
        .find(|c| wire_code(*c) == code)
        .unwrap_or(ErrorCode::Unknown)
}

const ALL_APIS: [Api; 23] = [
    Api::Handshake,
    Api::Metadata,
    Api::CreateTopics,
    Api::DeleteTopics,
    Api::DescribeConfigs,
    Api::AlterConfigs,
    Api::ListOffsets,
    Api::Produce,
    Api::Fetch,
    Api::ConsumerGroupHeartbeat,
    Api::OffsetCommit,
    Api::OffsetFetch,
    Api::ListGroups,
    Api::DescribeGroup,
    Api::DeleteGroup,
    Api::AlterGroupConfig,
    Api::Nack,
    Api::InitProducerId,
    Api::AddOffsetsToTxn,
    Api::EndTxn,
    Api::AlterReplicas,
    Api::DecommissionNode,
    Api::DescribeReplication,
];

/// The broker's acks for a wire value; `None` for a value the protocol does not define.
pub fn acks(acks: wire::Acks) -> Option<Acks> {
    match acks {
        wire::Acks::None => Some(Acks::None),
        wire::Acks::Leader => Some(Acks::Leader),
        wire::Acks::All => Some(Acks::All),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_its_own_wire_code() {
        let all = ErrorCode::ALL;
        let mut wire: Vec<i16> = all.iter().map(|c| wire_code(*c).0).collect();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), all.len());
        assert!(!wire.contains(&wire::ErrorCode::None.0));
        assert_eq!(wire.len() as i16, wire::ErrorCode::ENUM_MAX);
        for c in all {
            assert_eq!(broker_code(wire_code(c)), c);
        }
    }

    #[test]
    fn every_api_has_its_own_wire_key() {
        for k in wire::ApiKey::ENUM_MIN..=wire::ApiKey::ENUM_MAX {
            let api = broker_api(wire::ApiKey(k)).expect("every wire key is an API");
            assert_eq!(wire_api(api).0, k);
        }
    }
}
