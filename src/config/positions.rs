//! Where each value of a YAML document sits, so that checks made after deserialising can still name
//! `file:line:column`. (yaml_serde reports positions only for its own type errors.)

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Maps a value's path (`clusters[1].tls.fingerprint`) to its 1-based line and column.
#[derive(Debug, Default, Clone)]
pub(super) struct Positions {
    values: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Indexes a document; a document the scanner rejects yields an empty index (yaml_serde reports that error).
    pub(super) fn index(text: &str) -> Self {
        let mut recv = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut recv, false);
        Self { values: recv.values }
    }

    /// The position of the value at `path`, or of its nearest ancestor that has one.
    pub(super) fn find(&self, path: &str) -> (usize, usize) {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.values.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

enum Frame {
    /// `key_mark` is where the pending key was written; `needs_pos` marks a map whose position is its first key.
    Map {
        path: String,
        key: Option<String>,
        key_mark: (usize, usize),
        needs_pos: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    values: HashMap<String, (usize, usize)>,
}

impl Receiver {
    /// The path of the next value in the current container, or `None` when a mapping key comes next.
    fn next_value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k), .. }) => {
                Some(if path.is_empty() { k.clone() } else { format!("{path}.{k}") })
            }
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(value, ..) => match self.next_value_path() {
                None => {
                    if let Some(Frame::Map { key, key_mark, needs_pos, path }) = self.stack.last_mut() {
                        *key = Some(value);
                        *key_mark = pos;
                        if *needs_pos {
                            *needs_pos = false;
                            self.values.insert(path.clone(), pos);
                        }
                    }
                }
                Some(path) => {
                    self.values.insert(path, pos);
                    self.value_done();
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_value_path() {
                    self.values.insert(path, pos);
                }
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                // Block collections are best pointed at by the key that introduces them, or their first key.
                let key_pos = match self.stack.last() {
                    Some(Frame::Map { key_mark, .. }) => Some(*key_mark),
                    _ => None,
                };
                let is_map = matches!(ev, Event::MappingStart(..));
                let needs_pos = is_map && key_pos.is_none();
                if !needs_pos {
                    self.values.insert(path.clone(), key_pos.unwrap_or(pos));
                }
                let frame = if is_map {
                    Frame::Map { path, key: None, key_mark: pos, needs_pos }
                } else {
                    Frame::Seq { path, index: 0 }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let text = "interval: 10m\nclusters:\n  - name: a\n    tls:\n      fingerprint: \"AB\"\n  - name: b\n    nodes: [x, y]\n";
        let p = Positions::index(text);
        assert_eq!(p.find("interval"), (1, 11));
        assert_eq!(p.find("clusters[0].name"), (3, 11));
        assert_eq!(p.find("clusters[0].tls.fingerprint"), (5, 20));
        assert_eq!(p.find("clusters[1].name"), (6, 11));
        assert_eq!(p.find("clusters[1].nodes[1]"), (7, 16));
        assert_eq!(p.find("clusters[1].missing"), p.find("clusters[1]"));
    }
}
