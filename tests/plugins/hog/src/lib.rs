//! Fixture: allocates without bound, to test the per-instance memory limit.

use hookwall_guest::{Action, Event, Plugin};

struct Hog;

const MIB: usize = 1 << 20;

impl Plugin for Hog {
    fn handle(_event: Event) -> Result<Action, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Writing every byte commits the pages, and `black_box` keeps the hoard alive.
            hoard.push(vec![0xa5; MIB]);
            std::hint::black_box(&mut hoard);
        }
    }
}

hookwall_guest::export!(Hog);
