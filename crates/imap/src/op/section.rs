//! FETCH sections (RFC 9051 §6.4.5): how a section is spelt in the answer, and which bytes
//! it names. Sections of the stored message are ranges into it, so the answer is written
//! from the message itself and never copied.

use std::ops::Range;

use imap_codec::imap_types::fetch::Section;

use crate::fmt::string;
use crate::mime;

pub(crate) fn section_spec(section: &Option<Section<'_>>) -> String {
    let path = |p: &Option<imap_codec::imap_types::fetch::Part>| match p {
        Some(p) => {
            let nums: Vec<String> = p.0.as_ref().iter().map(|n| n.to_string()).collect();
            format!("{}.", nums.join("."))
        }
        None => String::new(),
    };
    let names = |ns: &[imap_codec::imap_types::core::AString<'_>]| {
        let items: Vec<String> = ns
            .iter()
            .map(|n| {
                let s = String::from_utf8_lossy(n.as_ref()).to_ascii_uppercase();
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
                {
                    s
                } else {
                    string(s.as_bytes())
                }
            })
            .collect();
        items.join(" ")
    };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => {
            let nums: Vec<String> = p.0.as_ref().iter().map(|n| n.to_string()).collect();
            nums.join(".")
        }
        Some(Section::Header(p)) => format!("{}HEADER", path(p)),
        Some(Section::HeaderFields(p, ns)) => {
            format!("{}HEADER.FIELDS ({})", path(p), names(ns.as_ref()))
        }
        Some(Section::HeaderFieldsNot(p, ns)) => {
            format!("{}HEADER.FIELDS.NOT ({})", path(p), names(ns.as_ref()))
        }
        Some(Section::Text(p)) => format!("{}TEXT", path(p)),
        Some(Section::Mime(p)) => {
            let nums: Vec<String> = p.0.as_ref().iter().map(|n| n.to_string()).collect();
            format!("{}.MIME", nums.join("."))
        }
    }
}

/// What a section names: a range of the stored message (written from it, never copied), or
/// bytes made for the answer (a header subset, decoded BINARY content).
pub(crate) enum Data {
    Raw(Range<usize>),
    Owned(Vec<u8>),
}

impl Data {
    /// The `<origin.count>` part of it, and the `<origin>` spelling for the answer.
    pub(crate) fn partial(self, partial: Option<(u32, std::num::NonZeroU32)>) -> (Data, String) {
        let Some((origin, count)) = partial else {
            return (self, String::new());
        };
        let len = match &self {
            Data::Raw(r) => r.len(),
            Data::Owned(v) => v.len(),
        };
        let start = (origin as usize).min(len);
        let end = start.saturating_add(count.get() as usize).min(len);
        let cut = match self {
            Data::Raw(r) => Data::Raw(r.start + start..r.start + end),
            Data::Owned(mut v) => {
                v.truncate(end);
                v.drain(..start);
                Data::Owned(v)
            }
        };
        (cut, format!("<{origin}>"))
    }
}

/// The bytes a BODY[section] names; `None` when the section does not exist.
pub(crate) fn section_data(
    raw: &[u8],
    root: &mime::Entity,
    section: &Option<Section<'_>>,
) -> Option<Data> {
    use mime::{Kind, Target};
    let part_path = |p: &Option<imap_codec::imap_types::fetch::Part>| -> Vec<u32> {
        p.as_ref()
            .map(|p| p.0.as_ref().iter().map(|n| n.get()).collect())
            .unwrap_or_default()
    };
    // The message whose header/text a HEADER/TEXT section means.
    let message_at = |path: &[u32]| -> Option<&mime::Entity> {
        match mime::resolve(root, path)? {
            Target::Root(m) => Some(m),
            Target::Part(p) => match &p.kind {
                Kind::Message(inner) => Some(inner.as_ref()),
                _ => None,
            },
        }
    };
    let numbers = |p: &imap_codec::imap_types::fetch::Part| -> Vec<u32> {
        p.0.as_ref().iter().map(|n| n.get()).collect()
    };
    match section {
        None => Some(Data::Raw(0..raw.len())),
        Some(Section::Part(p)) => match mime::resolve(root, &numbers(p))? {
            Target::Root(m) => Some(Data::Raw(m.body.clone())),
            Target::Part(e) => Some(Data::Raw(e.body.clone())),
        },
        Some(Section::Header(p)) => Some(Data::Raw(message_at(&part_path(p))?.header.clone())),
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let m = message_at(&part_path(p))?;
            let names: Vec<String> = names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
                .collect();
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            Some(Data::Owned(mime::header_subset(
                &raw[m.header.clone()],
                &names,
                not,
            )))
        }
        Some(Section::Text(p)) => Some(Data::Raw(message_at(&part_path(p))?.body.clone())),
        Some(Section::Mime(p)) => match mime::resolve(root, &numbers(p))? {
            Target::Root(m) => Some(Data::Raw(m.header.clone())),
            Target::Part(e) => Some(Data::Raw(e.header.clone())),
        },
    }
}

/// The decoded content of a BINARY section and its spelling in the answer.
pub(crate) fn binary_data(
    raw: &[u8],
    root: &mime::Entity,
    section: &[std::num::NonZeroU32],
) -> Result<(String, Data), &'static str> {
    let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
    let data = match mime::resolve(root, &path) {
        None => return Err("[NONEXISTENT] no such part"),
        Some(mime::Target::Root(_)) => Data::Raw(0..raw.len()),
        Some(mime::Target::Part(e)) => match e.kind {
            mime::Kind::Leaf => Data::Owned(
                mime::decode_body(raw, e).map_err(|_| "[UNKNOWN-CTE] cannot decode this part")?,
            ),
            _ => Data::Raw(e.body.clone()),
        },
    };
    let spec: Vec<String> = path.iter().map(u32::to_string).collect();
    Ok((spec.join("."), data))
}
