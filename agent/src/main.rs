use aya::programs::{SchedClassifier, Xdp};
fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pathwatch-ebpf"));
    let mut bpf = aya::EbpfLoader::new().load(obj).unwrap_or_else(|e| panic!("{e:?}"));
    for name in ["pathwatch_xdp", "pathwatch_xdp_pass"] {
        let p: &mut Xdp = bpf.program_mut(name).unwrap().try_into().unwrap();
        if let Err(e) = p.load() {
            let s = format!("{e}");
            std::fs::write(format!("/tmp/verlog-{name}.txt"), &s).unwrap(); eprintln!("{name}: FAIL {}", &s[s.len().saturating_sub(300)..]);
            continue;
        }
        println!("{name} loaded, verified {:?}", p.info().unwrap().verified_instruction_count());
    }
    let p: &mut SchedClassifier = bpf.program_mut("pathwatch_tc").unwrap().try_into().unwrap();
    if let Err(e) = p.load() {
        let s = format!("{e}");
        eprintln!("tc: FAIL {}", &s[s.len().saturating_sub(300)..]);
        return;
    }
    println!("tc loaded, verified {:?}", p.info().unwrap().verified_instruction_count());
}
