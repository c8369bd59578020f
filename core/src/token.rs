//! Join tokens: signed, expiring permissions to join one swarm, optionally as one peer.
//!
//! An operator's backend issues a token to each viewer it lets watch a stream; the tracker,
//! configured with the backend's public key, refuses announces without a valid token for the
//! swarm. So a third party cannot join (or snoop on) a swarm whose id it derived from a public
//! URL.
//!
//! A token is hex text of
//!
//! ```text
//! version (01) | swarm (20) | expires (u64 BE, Unix seconds)
//!   | flags (u8: bit 0 = bound to a peer, bit 1 = seed) | [peer id (20) if bound] | signature (64)
//! signature = Ed25519(key, "swarmcdn/join-token/v1" 00 ‖ every byte before the signature)
//! ```
//!
//! Clients send it in the `token` field of the `swarmcdn` announce extension. A seed token (flag
//! bit 1, or any token for the all-zero swarm id, which admits to every swarm) also lets its
//! holder announce with the role `seed`: the role puts a peer into every viewer's offers in a
//! thin swarm, so a tracker requiring tokens grants it only to the operator's seeds.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::{PeerId, SwarmId};
use crate::integrity::PublicKey;

const DOMAIN: &[u8] = b"swarmcdn/join-token/v1\0";
const VERSION: u8 = 1;

/// The longest token text accepted (a peer-bound token is 228 hex digits).
pub const MAX_TOKEN_LEN: usize = 256;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// None was given where one is required.
    #[error("a join token is required to join this swarm")]
    Missing,
    /// Not a token (bad hex, wrong length or version).
    #[error("malformed join token")]
    Malformed,
    /// No trusted key signed it.
    #[error("join token not signed by a trusted key")]
    BadSignature,
    /// Past its expiry.
    #[error("join token expired")]
    Expired,
    /// For another swarm.
    #[error("join token is for another swarm")]
    WrongSwarm,
    /// Bound to another peer.
    #[error("join token is for another peer")]
    WrongPeer,
    /// An announce with the role `seed` and a token that does not grant it.
    #[error("the seed role needs a seed token")]
    NotSeed,
}

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinToken {
    /// The swarm it lets the holder join.
    pub swarm: SwarmId,
    /// Unix time (seconds) after which it is refused.
    pub expires: u64,
    /// The only peer id that may use it, if bound.
    pub peer: Option<PeerId>,
    /// Its holder may announce with the role `seed`.
    pub seed: bool,
}

const FLAG_BOUND: u8 = 1;
const FLAG_SEED: u8 = 2;

impl JoinToken {
    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(50);
        b.push(VERSION);
        b.extend_from_slice(&self.swarm.0);
        b.extend_from_slice(&self.expires.to_be_bytes());
        let seed = if self.seed { FLAG_SEED } else { 0 };
        match self.peer {
            Some(p) => {
                b.push(FLAG_BOUND | seed);
                b.extend_from_slice(&p.0);
            }
            None => b.push(seed),
        }
        b
    }

    /// Signs the token with the issuer's ed25519 secret key; returns its text.
    pub fn sign(&self, secret: &[u8; 32]) -> String {
        let key = SigningKey::from_bytes(secret);
        let body = self.body();
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&body);
        let sig = key.sign(&msg);
        let mut all = body;
        all.extend_from_slice(&sig.to_bytes());
        hex::encode(all)
    }

    /// Parses a token and checks its signature against `keys`, its expiry against `now_unix`,
    /// and that it grants `swarm` to `peer`.
    pub fn verify(
        text: &str,
        keys: &[PublicKey],
        now_unix: u64,
        swarm: &SwarmId,
        peer: &PeerId,
    ) -> Result<Self, TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let bytes = hex::decode(text).map_err(|_| TokenError::Malformed)?;
        let (body, sig) = bytes
            .split_last_chunk::<64>()
            .ok_or(TokenError::Malformed)?;
        let token = Self::parse_body(body)?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(body);
        let sig = Signature::from_bytes(sig);
        let signed = keys.iter().any(|k| {
            VerifyingKey::from_bytes(&k.0).is_ok_and(|v| v.verify_strict(&msg, &sig).is_ok())
        });
        if !signed {
            return Err(TokenError::BadSignature);
        }
        if now_unix > token.expires {
            return Err(TokenError::Expired);
        }
        if token.swarm != *swarm {
            return Err(TokenError::WrongSwarm);
        }
        if token.peer.is_some_and(|p| p != *peer) {
            return Err(TokenError::WrongPeer);
        }
        Ok(token)
    }

    /// Whether it lets its holder announce as a seed: a seed token, or one for every swarm.
    pub fn grants_seed(&self) -> bool {
        self.seed || self.swarm == SwarmId([0; 20])
    }

    fn parse_body(b: &[u8]) -> Result<Self, TokenError> {
        let (&version, rest) = b.split_first().ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let (swarm, rest) = rest
            .split_first_chunk::<20>()
            .ok_or(TokenError::Malformed)?;
        let (expires, rest) = rest.split_first_chunk::<8>().ok_or(TokenError::Malformed)?;
        let (&flags, rest) = rest.split_first().ok_or(TokenError::Malformed)?;
        if flags & !(FLAG_BOUND | FLAG_SEED) != 0 {
            return Err(TokenError::Malformed);
        }
        let peer = match (flags & FLAG_BOUND != 0, rest.len()) {
            (false, 0) => None,
            (true, 20) => Some(PeerId(rest.try_into().expect("length checked"))),
            _ => return Err(TokenError::Malformed),
        };
        Ok(Self {
            swarm: SwarmId(*swarm),
            expires: u64::from_be_bytes(*expires),
            peer,
            seed: flags & FLAG_SEED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::DigestSigner;
    use proptest::prelude::*;

    const SECRET: [u8; 32] = [5; 32];

    fn key() -> PublicKey {
        DigestSigner::from_secret(SECRET).public_key()
    }

    #[test]
    fn valid_tokens_verify_and_everything_else_is_refused() {
        let s = SwarmId([1; 20]);
        let p = PeerId([2; 20]);
        let t = JoinToken {
            swarm: s,
            expires: 1000,
            peer: None,
            seed: false,
        };
        let text = t.sign(&SECRET);
        assert_eq!(JoinToken::verify(&text, &[key()], 999, &s, &p), Ok(t));
        assert_eq!(
            JoinToken::verify(&text, &[key()], 1001, &s, &p),
            Err(TokenError::Expired)
        );
        assert_eq!(
            JoinToken::verify(&text, &[key()], 999, &SwarmId([9; 20]), &p),
            Err(TokenError::WrongSwarm)
        );
        let other = DigestSigner::from_secret([6; 32]).public_key();
        assert_eq!(
            JoinToken::verify(&text, &[other], 999, &s, &p),
            Err(TokenError::BadSignature)
        );
        // Tampering with the expiry breaks the signature.
        let mut bytes = hex::decode(&text).unwrap();
        bytes[28] ^= 1;
        assert_eq!(
            JoinToken::verify(&hex::encode(bytes), &[key()], 999, &s, &p),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            JoinToken::verify("zz", &[key()], 0, &s, &p),
            Err(TokenError::Malformed)
        );

        let bound = JoinToken { peer: Some(p), ..t };
        let text = bound.sign(&SECRET);
        assert!(text.len() <= MAX_TOKEN_LEN);
        assert_eq!(JoinToken::verify(&text, &[key()], 0, &s, &p), Ok(bound));
        assert_eq!(
            JoinToken::verify(&text, &[key()], 0, &s, &PeerId([3; 20])),
            Err(TokenError::WrongPeer)
        );
        assert!(!bound.grants_seed());

        // The seed flag, with and without a peer, is signed like the rest.
        for peer in [None, Some(p)] {
            let seed = JoinToken {
                seed: true,
                peer,
                ..t
            };
            let text = seed.sign(&SECRET);
            let got = JoinToken::verify(&text, &[key()], 0, &s, &p).unwrap();
            assert!(got.seed && got.grants_seed());
            let mut bytes = hex::decode(&text).unwrap();
            bytes[29] &= !2;
            assert_eq!(
                JoinToken::verify(&hex::encode(bytes), &[key()], 0, &s, &p),
                Err(TokenError::BadSignature)
            );
        }
        let any = JoinToken {
            swarm: SwarmId([0; 20]),
            ..t
        };
        assert!(any.grants_seed());
        // Unknown flags are refused.
        let mut bytes = hex::decode(t.sign(&SECRET)).unwrap();
        bytes[29] = 4;
        assert_eq!(
            JoinToken::verify(&hex::encode(bytes), &[key()], 0, &s, &p),
            Err(TokenError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(text in "[0-9a-f]{0,300}") {
            let _ = JoinToken::verify(&text, &[key()], 0, &SwarmId([1; 20]), &PeerId([2; 20]));
        }
    }
}
