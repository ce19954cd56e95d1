//! Tables of real outputs: lsblk, lvs and `btrfs subvolume list` captured on the CI machine
//! (a VM with virtio disks, no device-mapper), and lvm2's documented JSON report format.

use std::path::Path;

use super::*;
use crate::config::Workload;

/// `lsblk -J -b -o NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINTS,MAJ:MIN` on the CI machine, with one
/// unmounted loop device attached (udev's database is absent there: no fstype).
const LSBLK_CI: &str = r#"{"blockdevices":[{"name":"loop0","path":"/dev/loop0","type":"loop","size":67108864,"fstype":null,"mountpoints":[null],"maj:min":"7:0"},{"name":"zram0","path":"/dev/zram0","type":"disk","size":0,"fstype":null,"mountpoints":[null],"maj:min":"253:0"},{"name":"vda","path":"/dev/vda","type":"disk","size":274877906944,"fstype":null,"mountpoints":["/"],"maj:min":"254:0"}]}"#;

/// The same with the loop device holding a mounted btrfs file system (pretty-printed, as
/// lsblk writes it).
const LSBLK_CI_MOUNTED: &str = r#"{
   "blockdevices": [
      {
         "name": "loop0",
         "path": "/dev/loop0",
         "type": "loop",
         "size": 209715200,
         "fstype": null,
         "mountpoints": [
             "/tmp/bx/m"
         ],
         "maj:min": "7:0"
      }
   ]
}"#;

/// A laptop-style layout: a disk with partitions, LUKS and LVM on top (util-linux 2.39).
const LSBLK_LVM: &str = r#"{"blockdevices":[{"name":"nvme0n1","path":"/dev/nvme0n1","type":"disk","size":512110190592,"fstype":null,"mountpoints":[null],"maj:min":"259:0","children":[{"name":"nvme0n1p1","path":"/dev/nvme0n1p1","type":"part","size":536870912,"fstype":"vfat","mountpoints":["/boot/efi"],"maj:min":"259:1"},{"name":"nvme0n1p2","path":"/dev/nvme0n1p2","type":"part","size":511571132416,"fstype":"LVM2_member","mountpoints":[null],"maj:min":"259:2","children":[{"name":"vg0-root","path":"/dev/mapper/vg0-root","type":"lvm","size":107374182400,"fstype":"ext4","mountpoints":["/"],"maj:min":"252:0"},{"name":"vg0-data","path":"/dev/mapper/vg0-data","type":"lvm","size":214748364800,"fstype":"xfs","mountpoints":[null],"maj:min":"252:1"}]}]},{"name":"sr0","path":"/dev/sr0","type":"rom","size":1073741312,"fstype":null,"mountpoints":[null],"maj:min":"11:0"}]}"#;

/// `lvs --reportformat json` on the CI machine (lvm2 installed, no volume groups).
const LVS_CI: &str = r#"  {
      "report": [
          {
              "lv": [
              ]
          }
      ]
  }"#;

/// lvm2's documented JSON report (lvmreport(7)), for the layout above plus a thin pool, an
/// inactive volume and a snapshot holdfast left.
const LVS_LVM: &str = r#"{
      "report": [
          {
              "lv": [
                  {"lv_name":"root", "vg_name":"vg0", "lv_path":"/dev/vg0/root", "lv_attr":"-wi-ao----", "lv_size":"107374182400", "lv_kernel_major":"252", "lv_kernel_minor":"0"},
                  {"lv_name":"data", "vg_name":"vg0", "lv_path":"/dev/vg0/data", "lv_attr":"-wi-a-----", "lv_size":"214748364800", "lv_kernel_major":"252", "lv_kernel_minor":"1"},
                  {"lv_name":"pool", "vg_name":"vg0", "lv_path":"", "lv_attr":"twi-aotz--", "lv_size":"10737418240", "lv_kernel_major":"252", "lv_kernel_minor":"4"},
                  {"lv_name":"old", "vg_name":"vg0", "lv_path":"/dev/vg0/old", "lv_attr":"-wi-------", "lv_size":"1073741824", "lv_kernel_major":"-1", "lv_kernel_minor":"-1"},
                  {"lv_name":"holdfast-snap-db", "vg_name":"vg0", "lv_path":"/dev/vg0/holdfast-snap-db", "lv_attr":"swi-a-s---", "lv_size":"1073741824", "lv_kernel_major":"252", "lv_kernel_minor":"5"}
              ]
          }
      ]
  }"#;

/// `btrfs subvolume list /tmp/bx/m` (btrfs-progs 6.x) on the CI machine.
const BTRFS_LIST: &str = "ID 256 gen 7 top level 5 path sub\nID 257 gen 7 top level 256 path sub/nested\nID 258 gen 7 top level 256 path sub/.holdfast-snapshot-app\n";

/// kind, location, MAJOR:MINOR, contains_mounts.
type Row = (String, String, Option<String>, bool);

fn row(f: &[Found]) -> Vec<Row> {
    f.iter()
        .map(|x| {
            (
                x.kind.clone(),
                x.location.clone(),
                x.device.clone(),
                x.contains_mounts,
            )
        })
        .collect()
}

#[test]
fn lsblk_and_lvs_outputs_become_findings() {
    let s = |a: &str| a.to_string();
    let cases: Vec<(&str, &str, &str, Vec<Row>)> = vec![
        (
            "CI, an unmounted loop device",
            LSBLK_CI,
            LVS_CI,
            vec![
                (s("block-device"), s("/dev/loop0"), Some(s("7:0")), false),
                (s("block-device"), s("/dev/vda"), Some(s("254:0")), true),
            ],
        ),
        (
            "CI, the loop device mounted",
            LSBLK_CI_MOUNTED,
            LVS_CI,
            vec![(s("block-device"), s("/dev/loop0"), Some(s("7:0")), true)],
        ),
        (
            "partitions and LVM, lvs present",
            LSBLK_LVM,
            LVS_LVM,
            vec![
                (s("block-device"), s("/dev/nvme0n1"), Some(s("259:0")), true),
                (
                    s("block-device"),
                    s("/dev/nvme0n1p1"),
                    Some(s("259:1")),
                    true,
                ),
                (
                    s("block-device"),
                    s("/dev/nvme0n1p2"),
                    Some(s("259:2")),
                    true,
                ),
                (
                    s("logical-volume"),
                    s("/dev/vg0/root"),
                    Some(s("252:0")),
                    true,
                ),
                (
                    s("logical-volume"),
                    s("/dev/vg0/data"),
                    Some(s("252:1")),
                    false,
                ),
                (s("logical-volume"), s("/dev/vg0/old"), None, false),
            ],
        ),
        (
            "partitions and LVM, no lvs",
            LSBLK_LVM,
            "",
            vec![
                (s("block-device"), s("/dev/nvme0n1"), Some(s("259:0")), true),
                (
                    s("block-device"),
                    s("/dev/nvme0n1p1"),
                    Some(s("259:1")),
                    true,
                ),
                (
                    s("block-device"),
                    s("/dev/nvme0n1p2"),
                    Some(s("259:2")),
                    true,
                ),
                (
                    s("logical-volume"),
                    s("/dev/mapper/vg0-root"),
                    Some(s("252:0")),
                    true,
                ),
                (
                    s("logical-volume"),
                    s("/dev/mapper/vg0-data"),
                    Some(s("252:1")),
                    false,
                ),
            ],
        ),
    ];
    for (what, lsblk, lvs, want) in cases {
        let devs = parse_lsblk(lsblk).unwrap();
        let lvs = if lvs.is_empty() {
            Vec::new()
        } else {
            parse_lvs(lvs).unwrap()
        };
        let f = device_findings(&devs, &lvs);
        assert_eq!(row(&f), want, "{what}: {f:#?}");
    }
    let f = device_findings(
        &parse_lsblk(LSBLK_LVM).unwrap(),
        &parse_lvs(LVS_LVM).unwrap(),
    );
    assert_eq!(f[0].size, Some(512110190592));
    assert!(
        f[3].detail.contains("LVM vg0/root") && f[3].detail.contains("mounted at /"),
        "{}",
        f[3].detail
    );
    assert!(f[5].detail.contains("inactive"));
    // Broken or hostile output is an error (host discovery then finds nothing from it).
    assert!(parse_lsblk("{\"blockdevices\": 7}").is_err());
    assert!(parse_lvs("not json").is_err());
}

#[test]
fn btrfs_subvolumes_are_found_at_the_paths_mounts_reach() {
    let mounts = btrfs_mounts(
        "/dev/loop0 /tmp/bx/m btrfs rw,relatime,discard=async,space_cache=v2,subvolid=5,subvol=/ 0 0\n\
         /dev/loop0 /srv/sub\\040x btrfs rw,relatime,subvolid=256,subvol=/sub 0 0\n\
         /dev/vda / ext4 rw,relatime 0 0\n\
         /dev/loop1 /mnt/other btrfs rw,subvolid=300,subvol=/@home 0 0\n",
    );
    assert_eq!(mounts.len(), 3);
    assert_eq!(mounts[1].at, "/srv/sub x");
    assert_eq!(mounts[1].subvol, "sub");
    let f = subvolume_findings("/dev/loop0", BTRFS_LIST, &mounts);
    let locs: Vec<&str> = f.iter().map(|x| x.location.as_str()).collect();
    // The first mount that reaches each; holdfast's own snapshot is left out.
    assert_eq!(locs, vec!["/tmp/bx/m/sub", "/tmp/bx/m/sub/nested"]);
    assert!(f
        .iter()
        .all(|x| x.kind == "btrfs-subvolume" && x.contains_mounts));
    assert!(f[1].detail.contains("id 257"), "{}", f[1].detail);
    // Mounted only as a subvolume: the ones outside it are not reachable.
    let only_sub: Vec<BtrfsMount> = mounts.iter().skip(1).cloned().collect();
    let f = subvolume_findings("/dev/loop0", BTRFS_LIST, &only_sub);
    let locs: Vec<&str> = f.iter().map(|x| x.location.as_str()).collect();
    assert_eq!(locs, vec!["/srv/sub x", "/srv/sub x/nested"]);
}

/// Coverage is by identity: a volume source covers its device, a path source a subvolume at
/// (or, without a snapshot, below) its paths; a path above /dev never covers a device.
#[test]
fn devices_and_subvolumes_are_covered_only_by_what_protects_them() {
    let text = "[repository.r]\nurl = \"/tmp/x\"\n[class.c]\nrpo = \"1h\"\n\
        [[source]]\nname = \"vol\"\nkind = \"volume\"\npath = \"/dev/holdfast-test-nonexistent\"\nclass = \"c\"\nstrategy = \"backup\"\n\
        [[source]]\nname = \"devdir\"\nkind = \"path\"\npath = \"/dev\"\nclass = \"c\"\nstrategy = \"backup\"\n\
        [[source]]\nname = \"top\"\nkind = \"path\"\npath = \"/srv/top\"\nclass = \"c\"\nstrategy = \"backup\"\n\
        [[source]]\nname = \"snap\"\nkind = \"path\"\npath = \"/mnt/s\"\nsnapshot = \"btrfs\"\nclass = \"c\"\nstrategy = \"backup\"\n";
    let w = Workload::parse(Path::new("w.toml"), text).unwrap();
    let dev = |loc: &str, d: &str| Found {
        device: Some(d.into()),
        ..Found::new("block-device", loc.into(), String::new())
    };
    let sv = |loc: &str| Found::new("btrfs-subvolume", loc.into(), String::new());
    let mut f = vec![
        dev("/dev/holdfast-test-nonexistent", "7:9"),
        dev("/dev/loop9", "7:9"),
        sv("/srv/top"),
        sv("/srv/top/nested"),
        sv("/srv"),
        sv("/mnt/s"),
        sv("/mnt/s/nested"),
        Found::new("logical-volume", "/dev/vg0/data".into(), String::new()),
    ];
    crate::discover::mark(&w, &mut f);
    let by: Vec<Option<&str>> = f.iter().map(|x| x.protected_by.as_deref()).collect();
    assert_eq!(
        by,
        vec![
            Some("vol"),
            // Another device: the volume source's path does not exist, so no number matches.
            None,
            Some("top"),
            Some("top"),
            None,
            Some("snap"),
            // Not in a snapshot of /mnt/s.
            None,
            None,
        ],
        "{f:#?}"
    );
}

/// `--suggest` offers a volume source for an unmounted device, nothing for a mounted one or a
/// subvolume (their data is found place by place).
#[test]
fn suggestions_are_volume_sources_for_unmounted_devices_only() {
    let f = device_findings(&parse_lsblk(LSBLK_CI).unwrap(), &[]);
    let sv = Found {
        contains_mounts: true,
        ..Found::new("btrfs-subvolume", "/srv/x".into(), String::new())
    };
    let all: Vec<&Found> = f.iter().chain(std::iter::once(&sv)).collect();
    let s = crate::discover::suggest_all(&all, "c", &[]);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        s[0].contains("kind = \"volume\"") && s[0].contains("path = \"/dev/loop0\""),
        "{}",
        s[0]
    );
    let w = Workload::parse(
        Path::new("w.toml"),
        &format!(
            "[repository.r]\nurl = \"/tmp/x\"\n[class.c]\nrpo = \"1h\"\n{}",
            s[0]
        ),
    );
    assert!(w.is_ok(), "the suggestion parses: {:?}", w.err());
}
