//! Any bytes in a record of `__transaction_state` (a torn or foreign write): decoding must
//! return a record or a typed error, never panic; what decodes encodes back to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_txn::Record;

fuzz_target!(|data: &[u8]| {
    // [key length: u16 big-endian][key][tombstone flag: u8][value]
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (key, rest) = rest.split_at(len);
    let value = match rest.split_first() {
        Some((0, v)) => Some(v),
        _ => None,
    };
    if let Ok(record) = Record::decode(key, value) {
        let (k, v) = record.encode();
        let again = Record::decode(&k, v.as_deref()).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
});
