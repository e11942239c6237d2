//! The input format of the multi-frame targets (`detectors`): a short capture in a
//! form libFuzzer mutates well.
//!
//! ```text
//! flags: u8            bit 0: live emission (as `run`), else at-end (as `replay`)
//! base:  u64 LE        capture time of the first frame, ns
//! then up to MAX_FRAMES times:
//!   gap: u32 LE        µs since the previous frame
//!   len: u16 LE        frame length (cut to what is left of the input)
//!   frame: len bytes   an Ethernet frame
//! ```

/// Frames read from one input at most.
pub const MAX_FRAMES: usize = 64;

/// A decoded input.
#[derive(Debug, Default)]
pub struct Sequence<'a> {
    /// Emit findings live (as `run` does) rather than at the end (as `replay`).
    pub live: bool,
    /// (capture time ns, Ethernet frame).
    pub frames: Vec<(u64, &'a [u8])>,
}

/// Reads an input; whatever it holds, the result is a (possibly empty) sequence.
pub fn decode(data: &[u8]) -> Sequence<'_> {
    let Some((&flags, rest)) = data.split_first() else { return Sequence::default() };
    let Some((base, mut rest)) = rest.split_first_chunk::<8>() else { return Sequence::default() };
    let mut ts = u64::from_le_bytes(*base);
    let mut frames = Vec::new();
    while frames.len() < MAX_FRAMES {
        let Some((head, tail)) = rest.split_first_chunk::<6>() else { break };
        let gap_us = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let len = (u16::from_le_bytes([head[4], head[5]]) as usize).min(tail.len());
        if !frames.is_empty() {
            ts = ts.saturating_add(gap_us * 1000);
        }
        frames.push((ts, &tail[..len]));
        rest = &tail[len..];
    }
    Sequence { live: flags & 1 == 1, frames }
}

/// Writes frames (time ns, Ethernet bytes) in the input format.
pub fn encode(live: bool, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![u8::from(live)];
    out.extend_from_slice(&frames.first().map_or(0, |f| f.0).to_le_bytes());
    let mut prev = frames.first().map_or(0, |f| f.0);
    for (ts, frame) in frames.iter().take(MAX_FRAMES) {
        let gap_us = (ts.saturating_sub(prev) / 1000).min(u32::MAX as u64) as u32;
        prev = *ts;
        let frame = &frame[..frame.len().min(u16::MAX as usize)];
        out.extend_from_slice(&gap_us.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_microsecond_resolution() {
        let frames = vec![(5_000_000_000, vec![1, 2, 3]), (5_000_250_000, vec![]), (9_000_000_000, vec![9; 20])];
        let data = encode(true, &frames);
        let s = decode(&data);
        assert!(s.live);
        let got: Vec<(u64, Vec<u8>)> = s.frames.iter().map(|(t, f)| (*t, f.to_vec())).collect();
        assert_eq!(got, frames);
    }

    #[test]
    fn short_or_lying_inputs_decode_to_what_is_there() {
        assert!(decode(&[]).frames.is_empty());
        assert!(decode(&[1, 2, 3]).frames.is_empty());
        let mut d = vec![0; 9];
        d.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 7, 7]);
        assert_eq!(decode(&d).frames, vec![(0, &[7u8, 7][..])]);
    }
}
