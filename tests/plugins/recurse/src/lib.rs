//! Fixture: unbounded recursion (the stack overflows: a trap, not a host crash).

use hookwall_guest::{Action, Event, Plugin};

fn depth(n: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(n % 256) as usize] = n as u8;
    // black_box keeps the optimiser from turning the recursion into a loop.
    std::hint::black_box(depth(n + 1, std::hint::black_box(pad))) + u64::from(pad[0])
}

struct Recurse;

impl Plugin for Recurse {
    fn handle(_event: Event) -> Result<Action, String> {
        let mut pad = [0u8; 256];
        let d = depth(0, &mut pad);
        Err(format!("unreachable: depth {d}"))
    }
}

hookwall_guest::export!(Recurse);
