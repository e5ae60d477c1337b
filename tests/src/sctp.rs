//! Just enough SCTP (RFC 9260) for raw-socket probes and frame building:
//! the common header, an INIT chunk, and the CRC32c checksum.
//!
//! The bed's kernel has no SCTP stack, so SCTP traffic is made and answered
//! by hand over raw IP sockets (protocol 132).

use crate::checksum::crc32c;

/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;
/// Length of the SCTP common header.
pub const COMMON_HEADER_LEN: usize = 12;
/// Length of the INIT chunk [`init_packet`] writes.
pub const INIT_CHUNK_LEN: usize = 20;

/// Source port of an SCTP packet (`None` if shorter than a common header).
pub fn src_port(packet: &[u8]) -> Option<u16> {
    (packet.len() >= COMMON_HEADER_LEN).then(|| u16::from_be_bytes([packet[0], packet[1]]))
}

/// Destination port of an SCTP packet (`None` if too short).
pub fn dst_port(packet: &[u8]) -> Option<u16> {
    (packet.len() >= COMMON_HEADER_LEN).then(|| u16::from_be_bytes([packet[2], packet[3]]))
}

/// Initiate Tag of the INIT chunk of an [`init_packet`] (`None` if the
/// packet does not start with an INIT chunk).
pub fn initiate_tag(packet: &[u8]) -> Option<u32> {
    let chunk = packet.get(COMMON_HEADER_LEN..COMMON_HEADER_LEN + INIT_CHUNK_LEN)?;
    (chunk[0] == 1).then(|| u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]))
}

/// An SCTP packet: common header (verification tag 0, as INIT requires)
/// and one INIT chunk carrying `initiate_tag` and `initial_tsn`, with a
/// valid checksum.
pub fn init_packet(sport: u16, dport: u16, initiate_tag: u32, initial_tsn: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(COMMON_HEADER_LEN + INIT_CHUNK_LEN);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // verification tag
    p.extend_from_slice(&0u32.to_be_bytes()); // checksum, filled below
    p.push(1); // chunk type INIT
    p.push(0); // flags
    p.extend_from_slice(&(INIT_CHUNK_LEN as u16).to_be_bytes());
    p.extend_from_slice(&initiate_tag.to_be_bytes());
    p.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&initial_tsn.to_be_bytes());
    set_checksum(&mut p);
    p
}

/// The CRC32c of `packet` with its checksum field taken as zero.
fn compute(packet: &[u8]) -> u32 {
    let mut copy = packet.to_vec();
    copy[8..12].fill(0);
    crc32c(&copy)
}

/// Writes the checksum of `packet` into its common header (the CRC32c
/// value goes on the wire least significant byte first, as Linux does).
/// Packets shorter than a common header are left alone.
pub fn set_checksum(packet: &mut [u8]) {
    if packet.len() < COMMON_HEADER_LEN {
        return;
    }
    let crc = compute(packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Whether the checksum in `packet`'s common header is right.
pub fn checksum_ok(packet: &[u8]) -> bool {
    packet.len() >= COMMON_HEADER_LEN && packet[8..12] == compute(packet).to_le_bytes()
}

/// Swaps source and destination port and fixes the checksum: the bed's
/// SCTP "echo" answer.
pub fn swap_ports(packet: &mut [u8]) {
    if packet.len() < COMMON_HEADER_LEN {
        return;
    }
    let (sport, dport) = ([packet[0], packet[1]], [packet[2], packet[3]]);
    packet[0..2].copy_from_slice(&dport);
    packet[2..4].copy_from_slice(&sport);
    set_checksum(packet);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_packet_round_trips() {
        let mut p = init_packet(40000, 9, 0xdead_beef, 7);
        assert_eq!(p.len(), COMMON_HEADER_LEN + INIT_CHUNK_LEN);
        assert!(checksum_ok(&p));
        assert_eq!(src_port(&p), Some(40000));
        assert_eq!(dst_port(&p), Some(9));
        assert_eq!(initiate_tag(&p), Some(0xdead_beef));
        swap_ports(&mut p);
        assert!(checksum_ok(&p));
        assert_eq!(src_port(&p), Some(9));
        assert_eq!(dst_port(&p), Some(40000));
        p[20] ^= 1;
        assert!(!checksum_ok(&p));
    }
}
