//! Fixture: never returns, to test the per-call deadline (epoch interruption).

use hookwall_guest::{Action, Event, Plugin};

struct Spin;

impl Plugin for Spin {
    fn handle(_event: Event) -> Result<Action, String> {
        let mut n = 0u64;
        loop {
            // `black_box` keeps the optimiser from proving the loop side-effect free and
            // removing it (an infinite loop without side effects is otherwise fair game).
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

hookwall_guest::export!(Spin);
