//! Room under the verifier's limit. The kernel refuses a program whose verification
//! walks more than 1 M instructions, and the count moves with every branch added to
//! the walk and with the kernel's own verifier: a program set that verifies at 96 %
//! of the limit here may not load on the next kernel, and then pathwatch watches
//! nothing. The XDP program once stood at 963 k; reading the full walk's packet
//! through an opaque context pointer brought it to 400 k (`packet::XdpPacket`).

use agent_common::{KernelConfig, names::PROG_DROP};
use pathwatch::kernel::{Kernel, LoadOptions};
use pathwatch_tests::privileged;

/// The most a program may take of the verifier's 1 M-instruction budget.
const ROOM: u32 = 700_000;

/// Every program the agent runs per packet, and the drop program, verifies in at most
/// [`ROOM`] instructions, as the kernel counted them when it loaded the program
/// (`verified_insns`). The drop program walks its packets with the same walk, so a
/// change to the walk can push it over the limit, or trip the verifier in ways only
/// its shape of packet reads shows, without the classifiers noticing.
#[test]
fn each_packet_program_and_the_drop_program_verify_well_under_the_limit() {
    if !privileged("each_packet_program_and_the_drop_program_verify_well_under_the_limit") {
        return;
    }
    let mut kernel = Kernel::load(&LoadOptions::default(), &KernelConfig::new()).expect("load the programs");
    kernel.load_drops().expect("the drop program passes the verifier");
    let drop = kernel.ebpf_mut().program_mut(PROG_DROP).expect("the drop program is in the object");
    let drop_count = drop.info().expect("drop program info").verified_instruction_count();
    let counts = [
        ("pathwatch_xdp", kernel.xdp().info().expect("XDP program info").verified_instruction_count()),
        ("pathwatch_tc", kernel.tc().info().expect("TC program info").verified_instruction_count()),
        (PROG_DROP, drop_count),
    ];
    for (name, count) in counts {
        let count = count.expect("the kernel reports verified_insns (5.16 and later)");
        eprintln!("{name}: {count} instructions verified");
        assert!(count <= ROOM, "{name} took {count} of the verifier's 1000000 instructions (at most {ROOM} here)");
    }
}
