//! Protocol decoding on arbitrary bytes: a client request, a reply, and worker/broker
//! messages (the input split into frames at 0xFF bytes). Decoding must never panic, and
//! whatever decodes must survive encode -> decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmq_rpc::protocol;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = protocol::decode_request(data) {
        let again = protocol::decode_request(&protocol::encode_request(&req))
            .expect("an encoded request decodes");
        assert_eq!(again, req);
    }
    if let Ok(reply) = protocol::decode_reply(data) {
        let again = protocol::decode_reply(&protocol::encode_reply(&reply))
            .expect("an encoded reply decodes");
        assert_eq!(again, reply);
    }
    let frames: Vec<Vec<u8>> = data.split(|b| *b == 0xFF).map(<[u8]>::to_vec).collect();
    // A request or reply with data frames (docs/protocol.md 4.10): body, then the rest.
    if let Some((body, rest)) = frames.split_first() {
        if let Ok(req) = protocol::decode_request_frames(body, rest.to_vec()) {
            for min in [0, 1, 1 << 20] {
                let mut again = protocol::encode_request_frames(&req, min);
                let body = again.remove(0);
                let again = protocol::decode_request_frames(&body, again)
                    .expect("a request encoded with data frames decodes");
                assert_eq!(again, req);
            }
        }
        let _ = protocol::decode_reply_frames(body, rest.to_vec());
    }
    if let Ok(msg) = protocol::decode_worker_message(&frames) {
        let again = protocol::decode_worker_message(&protocol::encode_worker_message(&msg))
            .expect("an encoded worker message decodes");
        assert_eq!(again, msg);
    }
    if let Ok(msg) = protocol::decode_broker_message(&frames) {
        let again = protocol::decode_broker_message(&protocol::encode_broker_message(&msg))
            .expect("an encoded broker message decodes");
        assert_eq!(again, msg);
    }
});
