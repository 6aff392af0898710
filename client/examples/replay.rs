//! Replays topic `example` from a point in time: every record at or after the timestamp.
//!
//! ```text
//! cargo run -p quiver-client --example replay -- 2026-11-26T12:00:00Z   # or ms since epoch
//! ```

use quiver_client::{
    Admin, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetQuery, SeekTo,
};

fn parse_time(arg: &str) -> Result<i64, ClientError> {
    if let Ok(ms) = arg.parse::<i64>() {
        return Ok(ms);
    }
    // Minimal RFC 3339 (UTC, `YYYY-MM-DDTHH:MM:SSZ`), to keep the example dependency-free.
    let bad = || {
        ClientError::Invalid(format!(
            "{arg:?} is not ms since the epoch or YYYY-MM-DDTHH:MM:SSZ"
        ))
    };
    let (date, time) = arg.trim_end_matches('Z').split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, m, day] = d[..] else {
        return Err(bad());
    };
    let [hh, mm, ss] = t[..] else {
        return Err(bad());
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let from = parse_time(&std::env::args().nth(1).unwrap_or_else(|| "0".into()))?;
    let broker = std::env::var("QUIVER_BROKERS").unwrap_or_else(|_| "127.0.0.1:7420".into());
    let addr = broker
        .parse()
        .map_err(|e| ClientError::Invalid(format!("QUIVER_BROKERS={broker}: {e}")))?;
    let client = Client::connect(&[addr], ClientConfig::default()).await?;
    let admin = Admin::new(client.clone());
    let partitions = client.route("example").await?.partitions.len() as i32;
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let assignment: Vec<(&str, i32)> = (0..partitions).map(|p| ("example", p)).collect();
    consumer.assign(&assignment);
    let mut remaining = 0;
    for p in 0..partitions {
        let start = consumer.seek("example", p, SeekTo::Timestamp(from)).await?;
        let end = admin
            .list_offsets("example", p, OffsetQuery::Latest)
            .await?
            .unwrap_or(0);
        remaining += (end - start).max(0);
    }
    println!("replaying {remaining} records written at or after {from} ms");
    for _ in 0..remaining {
        let r = consumer.next_record().await?;
        println!(
            "{}/{} @{} ts={} {}",
            r.topic,
            r.partition,
            r.offset,
            r.timestamp_ms,
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
        );
    }
    Ok(())
}
