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
    }
}

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
        let all = [
            ErrorCode::Unknown,
            ErrorCode::MalformedRequest,
            ErrorCode::UnsupportedVersion,
            ErrorCode::UnknownApi,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownTopic,
            ErrorCode::UnknownPartition,
            ErrorCode::NotOwner,
            ErrorCode::TopicExists,
            ErrorCode::InvalidTopicName,
            ErrorCode::InvalidConfig,
            ErrorCode::InvalidBatch,
            ErrorCode::CorruptData,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::DiskFull,
            ErrorCode::StorageError,
            ErrorCode::Timeout,
            ErrorCode::TooManyRequests,
            ErrorCode::ShuttingDown,
            ErrorCode::InvalidRequest,
        ];
        let mut wire: Vec<i16> = all.iter().map(|c| wire_code(*c).0).collect();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), all.len());
        assert!(!wire.contains(&wire::ErrorCode::None.0));
        assert_eq!(wire.len() as i16, wire::ErrorCode::ENUM_MAX);
    }
}
