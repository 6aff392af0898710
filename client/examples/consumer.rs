//! Prints every record of topic `example` from the beginning, then follows new ones.
//!
//! ```text
//! cargo run -p quiver-client --example consumer
//! ```

use futures::StreamExt;
use quiver_client::{Client, ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetReset};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let broker = std::env::var("QUIVER_BROKERS").unwrap_or_else(|_| "127.0.0.1:7420".into());
    let addr = broker
        .parse()
        .map_err(|e| ClientError::Invalid(format!("QUIVER_BROKERS={broker}: {e}")))?;
    let client = Client::connect(&[addr], ClientConfig::default()).await?;
    let partitions = client.route("example").await?.partitions.len() as i32;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let assignment: Vec<(&str, i32)> = (0..partitions).map(|p| ("example", p)).collect();
    consumer.assign(&assignment);
    let mut records = consumer.stream();
    while let Some(r) = records.next().await {
        let r = r?;
        let value = r
            .value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        println!("{}/{} @{} {}", r.topic, r.partition, r.offset, value);
    }
    Ok(())
}
