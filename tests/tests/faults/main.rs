//! The fault suite: each test puts one lab node (`palisade_tests::fault`)
//! through one fault while two probe streams run on real traffic, an
//! allowed one and a refused one, and checks that nothing the policy
//! refuses got through, that allowed traffic came back, and what an
//! operator saw. Each prints one table row:
//!
//! `FAULT-ROW | fault | wrongly allowed | wrongly dropped (count, longest gap) | reported |`
//!
//! collected with `cargo test -p palisade-tests --test faults --
//! --test-threads=1 --nocapture` into `docs/faults.md`.
//!
//! Needs root and the `palisade` binary (`$PALISADE_BIN`, else
//! target/debug/palisade, a debug build: the crash points exist only
//! there). Every lab, mount and agent is removed on drop, also when an
//! assertion fails; every wait is bounded.

mod api;
mod kill;
mod maps;
mod node;
