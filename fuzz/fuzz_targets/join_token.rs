//! Join tokens as a client sends them in an announce: any text is refused with an error or
//! accepted, never a panic, and what is accepted is exactly the token the issuer signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmcdn_core::ids::{PeerId, SwarmId};
use swarmcdn_core::integrity::DigestSigner;
use swarmcdn_core::token::JoinToken;

const SECRET: [u8; 32] = [5; 32];

fuzz_target!(|data: &[u8]| {
    let key = DigestSigner::from_secret(SECRET).public_key();
    let swarm = SwarmId([1; 20]);
    let peer = PeerId([2; 20]);
    // As text (whatever the client wrote).
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = JoinToken::verify(&text, &[key], 0, &swarm, &peer) {
        assert_eq!(t.sign(&SECRET), text.to_ascii_lowercase());
    }
    // As the bytes of a token (a valid hex encoding, so the parser and the signature check
    // see them).
    let text = hex::encode(data);
    if let Ok(t) = JoinToken::verify(&text, &[key], 0, &swarm, &peer) {
        assert_eq!(t.sign(&SECRET), text);
    }
});
