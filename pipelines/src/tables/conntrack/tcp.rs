//! The TCP connection-tracking state machine: a pure function of (state, direction, flags)
//! following Linux's `tcp_conntracks[2][6][]` table (net/netfilter/nf_conntrack_proto_tcp.c,
//! the table of current kernels: a reply SYN in TIME_WAIT reopens, a SYN/ACK from the
//! original side answers a simultaneous open).
//!
//! The packet's flags select one of six rows, like the kernel's `get_conntrack_index()`:
//! RST wins over everything, then SYN (SYN|ACK or SYN alone), then FIN, then ACK, else
//! "none". Cells marked `sIV` (invalid) and `sIG` (ignored) in the kernel leave the state
//! unchanged here ([`next`]); [`transition`] tells the three outcomes apart.
//!
//! No window tracking: sequence numbers are not checked (the kernel's `tcp_in_window`), so
//! an out-of-window packet advances the state like an in-window one.

use super::Dir;

/// TCP header flag bits (RFC 9293 §3.1), as in the flags byte of the header.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Connection-tracking states of a TCP flow (Linux's `enum tcp_conntrack`, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    /// SYN seen from the reply side too: simultaneous open.
    SynSent2 = 9,
}

impl TcpState {
    /// All states, in code order.
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The state with code `c` (`TcpState as u8`).
    pub fn from_code(c: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(c)).copied()
    }

    /// The name Linux prints (`/proc/net/nf_conntrack`, `conntrack -L`).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }
}

/// The row of the table a packet's flags select (`enum tcp_bit_set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRow {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

/// The row for a flags byte (Linux's `get_conntrack_index()`).
pub fn row(flags: u8) -> FlagRow {
    if flags & RST != 0 {
        FlagRow::Rst
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            FlagRow::SynAck
        } else {
            FlagRow::Syn
        }
    } else if flags & FIN != 0 {
        FlagRow::Fin
    } else if flags & ACK != 0 {
        FlagRow::Ack
    } else {
        FlagRow::None
    }
}

/// What a packet does to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state becomes this one (possibly the same).
    To(TcpState),
    /// `sIG`: the packet may be valid or not; the state is left alone.
    Ignore,
    /// `sIV`: the packet does not fit the state; the state is left alone.
    Invalid,
}

const IV: u8 = 10;
const IG: u8 = 11;
const NO: u8 = TcpState::None as u8;
const SS: u8 = TcpState::SynSent as u8;
const SR: u8 = TcpState::SynRecv as u8;
const ES: u8 = TcpState::Established as u8;
const FW: u8 = TcpState::FinWait as u8;
const CW: u8 = TcpState::CloseWait as u8;
const LA: u8 = TcpState::LastAck as u8;
const TW: u8 = TcpState::TimeWait as u8;
const CL: u8 = TcpState::Close as u8;
const S2: u8 = TcpState::SynSent2 as u8;

/// `TABLE[dir][row][state]`, columns in state order: NO SS SR ES FW CW LA TW CL S2.
const TABLE: [[[u8; 10]; 6]; 2] = [
    // Original direction.
    [
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    // Reply direction.
    [
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

// The table is indexed by state code: keep the enum and the columns in step.
const _: () = assert!(NO == 0 && S2 == 9 && IV as usize == TcpState::ALL.len());

/// The table cell for a packet with `flags` travelling in `dir` while the flow is in `state`.
pub fn transition(state: TcpState, dir: Dir, flags: u8) -> Transition {
    let d = match dir {
        Dir::Original => 0,
        Dir::Reply => 1,
    };
    match TABLE[d][row(flags) as usize][state as usize] {
        IV => Transition::Invalid,
        IG => Transition::Ignore,
        c => TcpState::from_code(c).map_or(Transition::Invalid, Transition::To),
    }
}

/// The state after a packet; invalid and ignored packets keep the state.
pub fn next(state: TcpState, dir: Dir, flags: u8) -> TcpState {
    match transition(state, dir, flags) {
        Transition::To(s) => s,
        Transition::Ignore | Transition::Invalid => state,
    }
}

/// The state of a new flow whose first packet (original direction) has `flags`.
///
/// A SYN opens in `SynSent`. Any other first packet is "picked up" mid-stream as Linux does
/// with `nf_conntrack_tcp_loose=1`: the flow is taken as `Established` and the packet is
/// then applied to that state, so a first FIN gives `FinWait`, a first RST `Close`, and an
/// ACK (or SYN|ACK, or no flags) stays `Established`. No flags known (`None`): `Established`.
pub fn initial(flags: Option<u8>) -> TcpState {
    match flags {
        Some(f) if row(f) == FlagRow::Syn => TcpState::SynSent,
        Some(f) => next(TcpState::Established, Dir::Original, f),
        None => TcpState::Established,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dir::{Original as O, Reply as R};
    use TcpState::*;

    #[test]
    fn flag_rows_follow_get_conntrack_index() {
        assert_eq!(row(SYN), FlagRow::Syn);
        assert_eq!(row(SYN | ACK), FlagRow::SynAck);
        assert_eq!(row(SYN | RST), FlagRow::Rst);
        assert_eq!(row(FIN | ACK), FlagRow::Fin);
        assert_eq!(row(FIN | SYN), FlagRow::Syn);
        assert_eq!(row(ACK | PSH), FlagRow::Ack);
        assert_eq!(row(RST | ACK), FlagRow::Rst);
        assert_eq!(row(PSH), FlagRow::None);
        assert_eq!(row(0), FlagRow::None);
    }

    #[test]
    fn three_way_handshake_reaches_established() {
        let s = next(None, O, SYN);
        assert_eq!(s, SynSent);
        let s = next(s, R, SYN | ACK);
        assert_eq!(s, SynRecv);
        let s = next(s, O, ACK);
        assert_eq!(s, Established);
        // Data both ways keeps it there.
        assert_eq!(next(s, O, ACK | PSH), Established);
        assert_eq!(next(s, R, ACK | PSH), Established);
        // A retransmitted SYN keeps SynSent; a retransmitted SYN/ACK is ignored in SynRecv.
        assert_eq!(next(SynSent, O, SYN), SynSent);
        assert_eq!(transition(SynRecv, R, SYN | ACK), Transition::Ignore);
    }

    #[test]
    fn client_close_goes_through_fin_wait_close_wait_last_ack_to_time_wait() {
        let s = next(Established, O, FIN | ACK);
        assert_eq!(s, FinWait);
        let s = next(s, R, ACK);
        assert_eq!(s, CloseWait);
        let s = next(s, R, FIN | ACK);
        assert_eq!(s, LastAck);
        let s = next(s, O, ACK);
        assert_eq!(s, TimeWait);
        assert_eq!(next(s, O, ACK), TimeWait);
        assert_eq!(next(s, R, FIN | ACK), TimeWait);
    }

    #[test]
    fn server_close_and_crossing_fins_reach_time_wait() {
        let s = next(Established, R, FIN | ACK);
        assert_eq!(s, FinWait);
        let s = next(s, O, ACK);
        assert_eq!(s, CloseWait);
        let s = next(s, O, FIN | ACK);
        assert_eq!(s, LastAck);
        assert_eq!(next(s, R, ACK), TimeWait);
        // Both FINs before any ACK.
        let s = next(next(Established, O, FIN | ACK), R, FIN | ACK);
        assert_eq!(s, LastAck);
        assert_eq!(next(s, R, ACK), TimeWait);
    }

    #[test]
    fn rst_closes_from_every_tracked_state() {
        for st in [
            SynSent,
            SynRecv,
            Established,
            FinWait,
            CloseWait,
            LastAck,
            TimeWait,
            Close,
            SynSent2,
        ] {
            assert_eq!(next(st, O, RST), Close, "{st:?} orig");
            assert_eq!(next(st, R, RST | ACK), Close, "{st:?} reply");
        }
        assert_eq!(transition(None, O, RST), Transition::Invalid);
    }

    #[test]
    fn simultaneous_open() {
        let s = next(None, O, SYN);
        let s = next(s, R, SYN);
        assert_eq!(s, SynSent2);
        assert_eq!(next(s, R, SYN), SynSent2);
        let s = next(s, O, SYN | ACK);
        assert_eq!(s, SynRecv);
        assert_eq!(next(s, R, ACK), SynRecv);
        assert_eq!(next(s, O, ACK), Established);
        // The reply side's SYN/ACK answers it as well.
        assert_eq!(next(SynSent2, R, SYN | ACK), SynRecv);
    }

    #[test]
    fn reopen_after_time_wait_and_close() {
        assert_eq!(next(TimeWait, O, SYN), SynSent);
        assert_eq!(next(Close, O, SYN), SynSent);
        assert_eq!(next(TimeWait, R, SYN), SynSent);
        assert_eq!(transition(Close, R, SYN), Transition::Invalid);
    }

    #[test]
    fn invalid_and_ignored_packets_keep_the_state() {
        // ACK before any SYN/ACK, SYN/ACK from the client, FIN in SynSent, flagless packets.
        assert_eq!(transition(SynSent, O, ACK), Transition::Invalid);
        assert_eq!(next(SynSent, O, ACK), SynSent);
        assert_eq!(next(SynSent, O, SYN | ACK), SynSent);
        assert_eq!(next(Established, O, SYN | ACK), Established);
        assert_eq!(next(SynSent, O, FIN), SynSent);
        assert_eq!(next(SynSent, R, FIN), SynSent);
        assert_eq!(transition(SynSent, R, ACK), Transition::Ignore);
        assert_eq!(transition(Established, O, SYN), Transition::Ignore);
        assert_eq!(next(Established, O, SYN), Established);
        assert_eq!(transition(SynRecv, R, SYN), Transition::Invalid);
        for st in TcpState::ALL {
            assert_eq!(next(st, O, 0), st);
            assert_eq!(next(st, R, PSH), st);
            assert_eq!(transition(st, O, 0), Transition::Invalid);
        }
        assert_eq!(transition(None, R, ACK), Transition::Invalid);
    }

    #[test]
    fn whole_rows_match_the_kernel_table() {
        let cells = |dir, flags| TcpState::ALL.map(|s| transition(s, dir, flags));
        use Transition::{Ignore as G, Invalid as V, To};
        assert_eq!(
            cells(O, SYN),
            [
                To(SynSent),
                To(SynSent),
                G,
                G,
                G,
                G,
                G,
                To(SynSent),
                To(SynSent),
                To(SynSent2)
            ]
        );
        assert_eq!(
            cells(R, SYN | ACK),
            [V, To(SynRecv), G, G, G, G, G, G, G, To(SynRecv)]
        );
        assert_eq!(
            cells(O, FIN),
            [
                V,
                V,
                To(FinWait),
                To(FinWait),
                To(LastAck),
                To(LastAck),
                To(LastAck),
                To(TimeWait),
                To(Close),
                V
            ]
        );
        assert_eq!(
            cells(R, ACK),
            [
                V,
                G,
                To(SynRecv),
                To(Established),
                To(CloseWait),
                To(CloseWait),
                To(TimeWait),
                To(TimeWait),
                To(Close),
                G
            ]
        );
    }

    #[test]
    fn picked_up_flows_start_established() {
        assert_eq!(initial(Some(SYN)), SynSent);
        assert_eq!(initial(Some(ACK)), Established);
        assert_eq!(initial(Some(ACK | PSH)), Established);
        assert_eq!(initial(Some(SYN | ACK)), Established);
        assert_eq!(initial(Some(FIN | ACK)), FinWait);
        assert_eq!(initial(Some(RST)), Close);
        assert_eq!(initial(Option::None), Established);
    }
}
