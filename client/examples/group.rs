//! A member of consumer group `example-group` reading topic `example`: run it in several
//! terminals and the partitions are shared; stop one and the others take its partitions over.
//! A record whose value is `fail` is nacked: the group's coordinator retries it, then moves it
//! to `example.example-group.dlq`.
//!
//! ```text
//! cargo run -p quiver-client --example group
//! ```

use quiver_client::{
    Client, ClientConfig, ClientError, ConsumerConfig, GroupConsumer, GroupConsumerConfig,
    GroupEvent, OffsetReset, Subscription,
};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let broker = std::env::var("QUIVER_BROKERS").unwrap_or_else(|_| "127.0.0.1:7420".into());
    let addr = broker
        .parse()
        .map_err(|e| ClientError::Invalid(format!("QUIVER_BROKERS={broker}: {e}")))?;
    let client = Client::connect(&[addr], ClientConfig::default()).await?;
    let config = GroupConsumerConfig {
        consumer: ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        ..GroupConsumerConfig::default()
    };
    let mut member = GroupConsumer::subscribe(
        client,
        "example-group",
        Subscription::Topics(vec!["example".into()]),
        config,
    )
    .await?;
    println!("member {}", member.member_id());
    loop {
        match member.next_event().await? {
            GroupEvent::Assigned(tps) => println!("assigned {tps:?}"),
            GroupEvent::Revoked(tps) => println!("revoked {tps:?}"),
            GroupEvent::Lost(tps) => println!("lost {tps:?}"),
            GroupEvent::Record(r) => {
                let value = r
                    .value
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                if value == "fail" {
                    println!(
                        "{}@{} failed: {:?}",
                        r.partition,
                        r.offset,
                        member.nack(&r, "the value says fail").await?
                    );
                } else {
                    println!("{}@{} {value}", r.partition, r.offset);
                }
            }
        }
    }
}
