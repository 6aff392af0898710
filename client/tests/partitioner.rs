//! Keys map to the same partitions as Kafka's default partitioner: vectors made by an
//! independent implementation (kafka-python), `tools/kafka-interop.py murmur2`.

use quiver_client::partitioner::{murmur2, partition_for_key};

#[test]
fn keys_land_where_kafka_clients_put_them() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/murmur2.json");
    let cases: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 50);
    for case in cases {
        let hex = case["key"].as_str().unwrap();
        let key: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            i64::from(murmur2(&key)),
            case["murmur2"].as_i64().unwrap(),
            "murmur2 of {hex}"
        );
        for (n, want) in case["partitions"].as_object().unwrap() {
            let n: usize = n.parse().unwrap();
            assert_eq!(
                i64::from(partition_for_key(&key, n)),
                want.as_i64().unwrap(),
                "key {hex} over {n} partitions"
            );
        }
    }
}
