//! Sends lines from stdin (or 10 numbered records) to a topic on a local node.
//!
//! ```text
//! cargo run --release -- serve                       # in one terminal
//! cargo run -p quiver-client --example producer      # in another
//! ```

use quiver_client::{
    Admin, Client, ClientConfig, ClientError, Producer, ProducerConfig, ProducerRecord,
};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let broker = std::env::var("QUIVER_BROKERS").unwrap_or_else(|_| "127.0.0.1:7420".into());
    let addr = broker
        .parse()
        .map_err(|e| ClientError::Invalid(format!("QUIVER_BROKERS={broker}: {e}")))?;
    let client = Client::connect(&[addr], ClientConfig::default()).await?;
    match Admin::new(client.clone())
        .create_topic("example", 4, &[])
        .await
    {
        Ok(())
        | Err(ClientError::Broker {
            code: quiver_schema::wire::ErrorCode::TopicExists,
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    let producer = Producer::new(client, ProducerConfig::default());
    for i in 0..10 {
        let md = producer
            .send(
                ProducerRecord::new("example", format!("hello {i}")).key(format!("user-{}", i % 3)),
            )
            .await?;
        println!(
            "record {i} -> partition {} offset {}",
            md.partition, md.offset
        );
    }
    producer.close().await;
    Ok(())
}
