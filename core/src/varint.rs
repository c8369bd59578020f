//! Unsigned LEB128 varints, as used by the peer wire protocol and the digest encoding.
//!
//! A varint is at most 10 bytes. Overlong or overflowing encodings are errors, so every value
//! has exactly one encoding and decoding can never overflow.

/// Most bytes a `u64` varint takes.
pub const MAX_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VarintError {
    /// The input ended inside the varint.
    #[error("input ends inside a varint")]
    Truncated,
    /// The value does not fit 64 bits, or is not in its shortest form.
    #[error("varint overflows 64 bits or is not minimal")]
    Overflow,
}

/// Appends `v` as a varint.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes `v` as a varint at the start of `buf` (at least [`len`]`(v)` bytes) and returns
/// the bytes written: the bytes [`put`] appends.
///
/// # Panics
///
/// If `buf` is shorter than the encoding.
pub fn write(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// Number of bytes [`put`] writes for `v`.
pub const fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a varint from the front of `buf`, advancing it.
pub fn get(buf: &mut &[u8]) -> Result<u64, VarintError> {
    let mut value: u64 = 0;
    for i in 0..MAX_LEN {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(VarintError::Truncated);
        };
        *buf = rest;
        let low = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 0x01 {
            return Err(VarintError::Overflow);
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            // A zero final byte after the first is an overlong encoding.
            if i > 0 && byte == 0 {
                return Err(VarintError::Overflow);
            }
            return Ok(value);
        }
    }
    Err(VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out, bytes);
            assert_eq!(len(v), bytes.len());
            let mut b = bytes;
            assert_eq!(get(&mut b), Ok(v));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn rejects_overflow_overlong_and_truncation() {
        let mut b: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(get(&mut b), Err(VarintError::Overflow));
        let mut b: &[u8] = &[0x80; 11];
        assert_eq!(get(&mut b), Err(VarintError::Overflow));
        let mut b: &[u8] = &[0x81, 0x00];
        assert_eq!(get(&mut b), Err(VarintError::Overflow));
        let mut b: &[u8] = &[0x80];
        assert_eq!(get(&mut b), Err(VarintError::Truncated));
        let mut b: &[u8] = &[];
        assert_eq!(get(&mut b), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trips(v: u64, tail: Vec<u8>) {
            let mut out = Vec::new();
            put(&mut out, v);
            prop_assert_eq!(out.len(), len(v));
            let mut buf = [0xffu8; MAX_LEN];
            let n = write(&mut buf, v);
            prop_assert_eq!(&buf[..n], out.as_slice());
            out.extend_from_slice(&tail);
            let mut b = out.as_slice();
            prop_assert_eq!(get(&mut b), Ok(v));
            prop_assert_eq!(b, tail.as_slice());
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let mut b = bytes.as_slice();
            let _ = get(&mut b);
        }
    }
}
