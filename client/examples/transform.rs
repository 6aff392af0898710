//! Exactly-once consume-transform-produce: reads topic `example` as group `uppercase`,
//! writes each value upper-cased to `example-upper`, and commits the output with the input
//! offsets in one transaction. Kill it at any point and start it again: a read_committed
//! reader of `example-upper` sees each input record's output once.
//!
//! ```text
//! quiver topic create example --partitions 4
//! quiver topic create example-upper --partitions 4
//! cargo run -p quiver-client --example transform
//! quiver consume example-upper --from-beginning --isolation read_committed
//! ```

use quiver_client::{
    Client, ClientConfig, ClientError, ConsumerConfig, DeliveryMode, GroupConsumer,
    GroupConsumerConfig, Isolation, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    Subscription, TransformConfig, Transformer,
};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let broker = std::env::var("QUIVER_BROKERS").unwrap_or_else(|_| "127.0.0.1:7420".into());
    let addr = broker
        .parse()
        .map_err(|e| ClientError::Invalid(format!("QUIVER_BROKERS={broker}: {e}")))?;
    let client = Client::connect(&[addr], ClientConfig::default()).await?;
    let member = GroupConsumer::subscribe(
        client.clone(),
        "uppercase",
        Subscription::Topics(vec!["example".into()]),
        GroupConsumerConfig {
            consumer: ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                isolation: Isolation::ReadCommitted,
                ..ConsumerConfig::default()
            },
            delivery: DeliveryMode::Transactional,
            ..GroupConsumerConfig::default()
        },
    )
    .await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            // One id per instance role: a restarted instance fences the one it replaces.
            transactional_id: Some("uppercase-0".into()),
            ..ProducerConfig::default()
        },
    );
    let mut transformer = Transformer::new(member, producer, TransformConfig::default()).await?;
    loop {
        let n = transformer
            .run_once(|r| {
                let value = r.value.as_deref().unwrap_or_default().to_ascii_uppercase();
                let mut out = ProducerRecord::new("example-upper", value);
                out.key = r.key.clone();
                vec![out]
            })
            .await?;
        if n > 0 {
            println!("committed a transaction of {n} records");
        }
    }
}
