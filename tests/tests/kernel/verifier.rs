//! Room under the verifier's limit. The kernel refuses a program whose verification
//! walks more than 1 M instructions, and the count moves with every branch added to
//! the walk and with the kernel's own verifier: a program set that verifies at 96 %
//! of the limit here may not load on the next kernel, and then pathwatch watches
//! nothing. The XDP program once stood at 963 k; reading the full walk's packet
//! through an opaque context pointer brought it to 400 k (`packet::XdpPacket`).

use agent_common::KernelConfig;
use pathwatch::kernel::{Kernel, LoadOptions};
use pathwatch_tests::privileged;

/// The most a program may take of the verifier's 1 M-instruction budget.
const ROOM: u32 = 700_000;

/// Every program the agent runs per packet verifies in at most [`ROOM`] instructions,
/// as the kernel counted them when it loaded the program (`verified_insns`).
#[test]
fn each_packet_program_verifies_well_under_the_limit() {
    if !privileged("each_packet_program_verifies_well_under_the_limit") {
        return;
    }
    let mut kernel = Kernel::load(&LoadOptions::default(), &KernelConfig::new()).expect("load the programs");
    let counts = [
        ("pathwatch_xdp", kernel.xdp().info().expect("XDP program info").verified_instruction_count()),
        ("pathwatch_tc", kernel.tc().info().expect("TC program info").verified_instruction_count()),
    ];
    for (name, count) in counts {
        let count = count.expect("the kernel reports verified_insns (5.16 and later)");
        eprintln!("{name}: {count} instructions verified");
        assert!(count <= ROOM, "{name} took {count} of the verifier's 1000000 instructions (at most {ROOM} here)");
    }
}
