#![allow(clippy::unwrap_used, clippy::expect_used)] // A test that cannot set up fails, loudly.

use std::collections::BTreeMap;

use super::*;

const PART: Part = Part { file: "part.json", version: 2, limit: 4096 };

fn dir(tag: &str) -> StateDir {
    let path = std::env::temp_dir().join(format!("vztmpld-state-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    StateDir::open(&path.join("nested")).unwrap()
}

fn sample() -> BTreeMap<String, u32> {
    [("a".to_string(), 1), ("b".to_string(), 2)].into_iter().collect()
}

#[test]
fn a_saved_part_reads_back_and_nothing_is_left_beside_it() {
    let d = dir("roundtrip");
    assert!(d.load::<BTreeMap<String, u32>>(PART).unwrap().is_none(), "no file yet: nothing, and no error");
    d.save(PART, &sample()).unwrap();
    let (back, _saved_at) = d.load::<BTreeMap<String, u32>>(PART).unwrap().unwrap();
    assert_eq!(back, sample());
    let names: Vec<String> =
        std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["part.json".to_string()], "no temporary file left");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.file(PART)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

/// Every way a file can be unusable: an error naming the file, the file set aside as `<file>.bad`, and the
/// next load finds nothing (a fresh start), never the bad bytes again.
#[test]
fn an_unusable_file_costs_an_error_naming_it_and_is_set_aside() {
    let d = dir("unusable");
    d.save(PART, &sample()).unwrap();
    let good = std::fs::read(d.file(PART)).unwrap();
    let newer = String::from_utf8(good.clone()).unwrap().replace("\"version\":2", "\"version\":3");
    let other_part = String::from_utf8(good.clone()).unwrap().replace("\"part.json\"", "\"pins.json\"");
    let wrong_data = String::from_utf8(good.clone()).unwrap().replace("\"a\":1", "\"a\":\"one\"");
    let unusable = |e: &StateError| matches!(e, StateError::Unusable { .. });
    let newer_layout = |e: &StateError| matches!(e, StateError::Newer { found: 3, supported: 2, .. });
    type Expected<'a> = &'a dyn Fn(&StateError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), &unusable),
        ("garbage", b"\x00\x01garbage".to_vec(), &unusable),
        ("empty", Vec::new(), &unusable),
        ("newer", newer.into_bytes(), &newer_layout),
        ("another part", other_part.into_bytes(), &unusable),
        ("data of another shape", wrong_data.into_bytes(), &unusable),
        ("too large", vec![b' '; 5000], &unusable),
    ];
    for (case, bytes, expected) in cases {
        std::fs::write(d.file(PART), &bytes).unwrap();
        let err = d.load::<BTreeMap<String, u32>>(PART).expect_err(case);
        assert_eq!(err.path(), d.file(PART), "{case}: names the file: {err}");
        assert!(expected(&err), "{case}: {err:?}");
        assert_eq!(std::fs::read(d.path().join("part.json.bad")).unwrap(), bytes, "{case}: kept aside as it was");
        assert!(d.load::<BTreeMap<String, u32>>(PART).unwrap().is_none(), "{case}: then a fresh start");
    }
}

#[test]
fn a_crash_during_a_write_leaves_the_last_good_state() {
    let d = dir("crash");
    d.save(PART, &sample()).unwrap();
    // What a kill -9 between the temporary file's write and the rename leaves behind.
    std::fs::write(d.path().join(".part.json.tmp"), b"{\"format\":\"vztmpld-st").unwrap();
    assert_eq!(d.load::<BTreeMap<String, u32>>(PART).unwrap().unwrap().0, sample());
    // And the next save goes through over it.
    let mut more = sample();
    more.insert("c".into(), 3);
    d.save(PART, &more).unwrap();
    assert_eq!(d.load::<BTreeMap<String, u32>>(PART).unwrap().unwrap().0, more);
}

#[test]
fn a_write_that_fails_keeps_the_old_file_and_says_where() {
    let d = dir("unwritable");
    d.save(PART, &sample()).unwrap();
    // A directory where the temporary file goes: the write fails even for root (as a read-only or full
    // directory would).
    std::fs::create_dir(d.path().join(".part.json.tmp")).unwrap();
    let err = d.save(PART, &BTreeMap::<String, u32>::new()).unwrap_err();
    assert!(matches!(err, StateError::Io { action: "write", .. }) && err.path() == d.file(PART), "{err:?}");
    assert_eq!(d.load::<BTreeMap<String, u32>>(PART).unwrap().unwrap().0, sample());

    let big: BTreeMap<String, u32> = (0..1000).map(|i| (format!("key{i}"), i)).collect();
    std::fs::remove_dir(d.path().join(".part.json.tmp")).unwrap();
    let err = d.save(PART, &big).unwrap_err();
    assert!(matches!(err, StateError::TooLarge { limit: 4096, .. }), "{err:?}");
    assert_eq!(d.load::<BTreeMap<String, u32>>(PART).unwrap().unwrap().0, sample(), "the old state stays");
}

#[test]
fn a_state_directory_that_is_a_file_is_refused_with_its_path() {
    let d = dir("notadir");
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = StateDir::open(&file).unwrap_err();
    assert_eq!(err.path(), file, "{err}");
}
