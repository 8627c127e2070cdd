//! `JsonObject`: writes the router's own JSON (answers, errors, log lines) straight into a
//! `String`. The Worker bundle is what every isolate loads: building `serde_json::Value` trees
//! and serializing them linked in most of a JSON serializer and float formatting for nothing.

/// One JSON object being written; `finish` closes it.
pub struct JsonObject {
    out: String,
    empty: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObject {
    pub fn new() -> Self {
        JsonObject {
            out: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_string(&mut self.out, value);
        self
    }

    /// `null` when `None`.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    /// `null` when `None`.
    pub fn opt_num(self, key: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => self.num(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub fn bool(self, key: &str, value: bool) -> Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// `value` is already JSON (a nested object, an array, Groq's bytes).
    pub fn raw(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.out.push_str(value);
        self
    }

    /// Adds the field only when there is a value.
    pub fn maybe<T>(self, value: Option<T>, add: impl FnOnce(Self, T) -> Self) -> Self {
        match value {
            Some(v) => add(self, v),
            None => self,
        }
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// `[a,b,…]` from items that are already JSON.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// `s` as a JSON string literal, quotes included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_string(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal, escaping what JSON requires.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// What kind of JSON value `text` (valid JSON) holds, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn of(text: &str) -> Kind {
        match text.trim_start().as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') | None => Kind::Null,
            Some(_) => Kind::Number,
        }
    }

    /// For messages: "got a number".
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "a list",
            Kind::Object => "an object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json_that_round_trips() {
        let text = JsonObject::new()
            .str(
                "s",
                "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é ✓",
            )
            .opt_str("none", None)
            .num("n", u64::MAX)
            .opt_num("m", Some(3))
            .bool("b", true)
            .raw("a", &array(vec![string("x"), "1".to_string()]))
            .maybe(Some("y"), |o, v| o.str("maybe", v))
            .maybe(None::<&str>, |o, v| o.str("never", v))
            .finish();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["s"],
            "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é ✓"
        );
        assert_eq!(v["none"], serde_json::Value::Null);
        assert_eq!(v["n"], u64::MAX);
        assert_eq!(v["m"], 3);
        assert_eq!(v["b"], true);
        assert_eq!(v["a"], serde_json::json!(["x", 1]));
        assert_eq!(v["maybe"], "y");
        assert!(v.get("never").is_none());
        assert_eq!(JsonObject::new().finish(), "{}");
        assert_eq!(array(Vec::new()), "[]");
    }

    #[test]
    fn kinds() {
        for (text, kind) in [
            ("{}", Kind::Object),
            (" [1]", Kind::Array),
            ("\"x\"", Kind::String),
            ("true", Kind::Bool),
            ("false", Kind::Bool),
            ("null", Kind::Null),
            ("-1.5e3", Kind::Number),
            ("7", Kind::Number),
        ] {
            assert_eq!(Kind::of(text), kind, "{text}");
        }
    }
}

/// Why text is not the JSON expected; `at` is a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub what: &'static str,
    pub at: usize,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Deepest nesting the reader accepts, as `serde_json` does.
pub const MAX_DEPTH: usize = 128;

/// A small, strict, zero-copy JSON reader: it validates JSON text and hands back the raw text of
/// values, decoding only the strings and numbers the router actually reads. The router never
/// needs a tree of a caller's `messages`, only to check their shape and pass the bytes on.
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Where each value down to `TAPE_DEPTH` starts and ends, when building a [`Document`].
    tape: Option<Vec<Node>>,
    /// The member name just read, for the value that follows it on the tape.
    key: Option<(u32, u32, bool)>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            tape: None,
            key: None,
        }
    }

    /// Puts the value starting here on the tape, if one is kept and `depth` is recorded;
    /// returns its index there.
    fn record(&mut self, depth: usize) -> Option<usize> {
        let key = self.key.take();
        let tape = self.tape.as_mut()?;
        if depth > TAPE_DEPTH {
            return None;
        }
        if tape.len() >= TAPE_MAX_NODES {
            // A pathological body (say, a million-item list) is read the slow way, in bounded
            // memory: without a tape, every lookup scans.
            self.tape = None;
            return None;
        }
        tape.push(Node {
            key,
            start: self.pos as u32,
            end: self.pos as u32,
            depth: depth as u8,
        });
        Some(tape.len() - 1)
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError { what, at: self.pos })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(what)
        }
    }

    /// Skips one value, validating it; returns its raw text.
    fn value(&mut self, depth: usize) -> Result<&'a str, JsonError> {
        let Some(b) = self.peek() else {
            return self.fail("expected a value, found the end");
        };
        let start = self.pos;
        let slot = self.record(depth);
        match b {
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return self.fail("nested too deeply");
                }
                let close = if b == b'{' { b'}' } else { b']' };
                self.pos += 1;
                if self.peek() == Some(close) {
                    self.pos += 1;
                } else {
                    loop {
                        if close == b'}' {
                            if self.peek() != Some(b'"') {
                                return self.fail("expected a string key");
                            }
                            let (from, to, escaped) = self.string_span()?;
                            if self.tape.is_some() {
                                self.key = Some((from as u32, to as u32, escaped));
                            }
                            self.eat(b':', "expected `:`")?;
                        }
                        self.value(depth + 1)?;
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(c) if c == close => {
                                self.pos += 1;
                                break;
                            }
                            _ => {
                                return self.fail(if close == b'}' {
                                    "expected `,` or `}`"
                                } else {
                                    "expected `,` or `]`"
                                })
                            }
                        }
                    }
                }
            }
            b'"' => {
                self.string_span()?;
            }
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return self.fail("expected a value"),
        }
        if let (Some(i), Some(tape)) = (slot, self.tape.as_mut()) {
            tape[i].end = self.pos as u32;
        }
        Ok(&self.text[start..self.pos])
    }

    fn literal(&mut self, word: &'static str) -> Result<(), JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            self.fail("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("invalid number"),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(hex) = self.text.get(self.pos..self.pos + 4) else {
            return self.fail("invalid escape");
        };
        let code = u32::from_str_radix(hex, 16).or_else(|_| self.fail("invalid escape"))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.fail("invalid escape");
        }
        self.pos += 4;
        Ok(code)
    }

    /// Validates a string starting at `"`; returns the span inside the quotes and whether it
    /// holds escapes.
    fn string_span(&mut self) -> Result<(usize, usize, bool), JsonError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = skip_plain(self.bytes, self.pos);
            let Some(&b) = self.bytes.get(self.pos) else {
                return self.fail("unterminated string");
            };
            match b {
                b'"' => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok((start, end, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match self.bytes.get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            let code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return self.fail("lone surrogate in escape");
                                }
                                self.pos += 2;
                                if !(0xDC00..0xE000).contains(&self.hex4()?) {
                                    return self.fail("lone surrogate in escape");
                                }
                            } else if (0xDC00..0xE000).contains(&code) {
                                return self.fail("lone surrogate in escape");
                            }
                        }
                        _ => return self.fail("invalid escape"),
                    }
                }
                0..=0x1f => return self.fail("control character in string"),
                _ => self.pos += 1,
            }
        }
    }

    fn end(&mut self) -> Result<(), JsonError> {
        if self.peek().is_some() {
            return self.fail("trailing characters");
        }
        Ok(())
    }
}

/// The first position at or after `pos` holding `"`, `\\` or a control byte. Message content is
/// almost all plain string bytes, so they are skipped eight at a time (SWAR): this is the loop
/// that runs over a 1 MiB body.
fn skip_plain(bytes: &[u8], mut pos: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("an 8-byte slice"));
        // Exact test for "some byte is `\"`, `\\` or below 0x20"; the byte loop below finds which.
        let special = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if special != 0 {
            break;
        }
        pos += 8;
    }
    while let Some(&b) = bytes.get(pos) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// Checks that `text` is one JSON value.
pub fn validate(text: &str) -> Result<(), JsonError> {
    let mut r = Reader::new(text);
    r.value(0)?;
    r.end()
}

/// The members of a JSON object, in order, with their raw values (duplicates kept: the last one
/// counts, as in every common parser). `Err` if `text` is not exactly one JSON object.
pub fn members(text: &str) -> Result<Vec<(std::borrow::Cow<'_, str>, &str)>, JsonError> {
    let mut r = Reader::new(text);
    if r.peek() != Some(b'{') {
        // Report a syntax error in preference to a wrong kind.
        r.value(0)?;
        r.end()?;
        return Err(JsonError {
            what: "expected an object",
            at: 0,
        });
    }
    r.pos += 1;
    let mut members = Vec::new();
    if r.peek() == Some(b'}') {
        r.pos += 1;
    } else {
        loop {
            if r.peek() != Some(b'"') {
                return r.fail("expected a string key");
            }
            let (start, end, escaped) = r.string_span()?;
            let key = decode(&text[start..end], escaped);
            r.eat(b':', "expected `:`")?;
            let value = r.value(1)?;
            members.push((key, value));
            match r.peek() {
                Some(b',') => r.pos += 1,
                Some(b'}') => {
                    r.pos += 1;
                    break;
                }
                _ => return r.fail("expected `,` or `}`"),
            }
        }
    }
    r.end()?;
    Ok(members)
}

/// The raw items of a JSON array. `Err` if `text` is not exactly one JSON array.
pub fn items(text: &str) -> Result<Vec<&str>, JsonError> {
    let mut r = Reader::new(text);
    if r.peek() != Some(b'[') {
        r.value(0)?;
        r.end()?;
        return Err(JsonError {
            what: "expected a list",
            at: 0,
        });
    }
    r.pos += 1;
    let mut items = Vec::new();
    if r.peek() == Some(b']') {
        r.pos += 1;
    } else {
        loop {
            items.push(r.value(1)?);
            match r.peek() {
                Some(b',') => r.pos += 1,
                Some(b']') => {
                    r.pos += 1;
                    break;
                }
                _ => return r.fail("expected `,` or `]`"),
            }
        }
    }
    r.end()?;
    Ok(items)
}

/// The last member named `key` of the object `text`, raw; `None` if absent or not an object.
pub fn member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    Object::parse(text).ok()?.get(key)
}

/// An object's members, looked up by name; the last of duplicate names wins.
pub struct Object<'a>(pub Vec<(std::borrow::Cow<'a, str>, &'a str)>);

impl<'a> Object<'a> {
    pub fn parse(text: &'a str) -> Result<Object<'a>, JsonError> {
        members(text).map(Object)
    }

    /// The raw value of `name` (`null` included); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// How deep a [`Document`] remembers values: a chat body's root (0), `messages` (1), a message
/// (2), its `content` list (3), a part (4) and the part's members (5).
const TAPE_DEPTH: usize = 5;
/// Past this many values a [`Document`] keeps no tape (a few MB at most, whatever the body).
const TAPE_MAX_NODES: usize = 1 << 16;

/// One value on a [`Document`]'s tape, in document order.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The member name's span inside its quotes (members of objects only), and whether it holds
    /// escapes.
    key: Option<(u32, u32, bool)>,
    start: u32,
    end: u32,
    depth: u8,
}

/// A JSON text validated in one pass that also noted where every value down to `TAPE_DEPTH`
/// starts and ends (a tape), so reading the members of a nested object or the items of a nested
/// list does not scan their bytes again. A 1 MiB chat body is mostly one string inside
/// `messages[0].content`: reading the body, then `messages`, then the message would otherwise
/// scan that string three times.
pub struct Document<'a> {
    text: &'a str,
    tape: Option<Vec<Node>>,
}

impl<'a> Document<'a> {
    /// `Err` unless `text` is exactly one JSON value.
    pub fn parse(text: &'a str) -> Result<Document<'a>, JsonError> {
        if text.len() > u32::MAX as usize {
            // Offsets on the tape are 32-bit; such a text is read without one.
            validate(text)?;
            return Ok(Document { text, tape: None });
        }
        let mut r = Reader::new(text);
        r.tape = Some(Vec::new());
        r.value(0)?;
        r.end()?;
        Ok(Document { text, tape: r.tape })
    }

    /// The whole value, without the whitespace around it.
    pub fn root(&self) -> &'a str {
        match self.tape.as_deref() {
            Some([root, ..]) => &self.text[root.start as usize..root.end as usize],
            _ => self.text.trim_matches([' ', '\t', '\n', '\r']),
        }
    }

    /// The tape index of `raw`, when `raw` is a value of this text that the tape holds with its
    /// children.
    fn node(&self, raw: &str) -> Option<(usize, &[Node])> {
        let tape = self.tape.as_deref()?;
        let offset = (raw.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        if offset + raw.len() > self.text.len() {
            return None;
        }
        let i = tape
            .binary_search_by_key(&(offset as u32), |n| n.start)
            .ok()?;
        let node = tape[i];
        (node.end as usize == offset + raw.len() && usize::from(node.depth) < TAPE_DEPTH)
            .then_some((i, tape))
    }

    /// The direct children of the node at `i`, in order.
    fn children(tape: &[Node], i: usize) -> impl Iterator<Item = &Node> {
        let parent = tape[i];
        tape[i + 1..]
            .iter()
            .take_while(move |n| n.start < parent.end)
            .filter(move |n| n.depth == parent.depth + 1)
    }

    /// Like [`members`], read from the tape when `raw` is on it.
    pub fn members(
        &self,
        raw: &'a str,
    ) -> Result<Vec<(std::borrow::Cow<'a, str>, &'a str)>, JsonError> {
        match self.node(raw) {
            Some((i, tape)) if raw.starts_with('{') => Ok(Self::children(tape, i)
                .map(|n| {
                    let (from, to, escaped) = n.key.unwrap_or_default();
                    (
                        decode(&self.text[from as usize..to as usize], escaped),
                        &self.text[n.start as usize..n.end as usize],
                    )
                })
                .collect()),
            // On the tape, so valid JSON: only its kind is wrong.
            Some(_) => Err(JsonError {
                what: "expected an object",
                at: 0,
            }),
            None => members(raw),
        }
    }

    /// Like [`items`], read from the tape when `raw` is on it.
    pub fn items(&self, raw: &'a str) -> Result<Vec<&'a str>, JsonError> {
        match self.node(raw) {
            Some((i, tape)) if raw.starts_with('[') => Ok(Self::children(tape, i)
                .map(|n| &self.text[n.start as usize..n.end as usize])
                .collect()),
            Some(_) => Err(JsonError {
                what: "expected a list",
                at: 0,
            }),
            None => items(raw),
        }
    }

    /// Like [`Object::parse`], read from the tape when `raw` is on it.
    pub fn object(&self, raw: &'a str) -> Result<Object<'a>, JsonError> {
        self.members(raw).map(Object)
    }

    /// Like [`member`], read from the tape when `raw` is on it.
    pub fn member(&self, raw: &'a str, key: &str) -> Option<&'a str> {
        self.object(raw).ok()?.get(key)
    }
}

/// The string a raw JSON value holds; `None` unless it is a valid JSON string.
pub fn as_str(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    let mut r = Reader::new(raw);
    if r.peek() != Some(b'"') {
        return None;
    }
    let (start, end, escaped) = r.string_span().ok()?;
    r.end().ok()?;
    Some(decode(&raw[start..end], escaped))
}

/// A non-negative integer; `None` for anything else (fractions, negatives, text).
pub fn as_u64(raw: &str) -> Option<u64> {
    raw.trim().parse().ok()
}

/// Any integer.
pub fn as_i64(raw: &str) -> Option<i64> {
    raw.trim().parse().ok()
}

/// Any JSON number, as `f64`. Exact for the numbers callers send (a few significant digits);
/// long mantissas round slightly. Hand-written because `str::parse::<f64>` links kilobytes of
/// power-of-five tables into the bundle for a range check.
pub fn as_f64(raw: &str) -> Option<f64> {
    let raw = raw.trim();
    let mut r = Reader::new(raw);
    r.number().ok()?;
    if r.pos != raw.len() {
        return None;
    }
    decimal(raw)
}

/// `[-]digits[.digits][e[+-]digits]` (also without the leading digits rule) as `f64`.
pub fn decimal(text: &str) -> Option<f64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut digits: u64 = 0;
    let mut scale = exponent;
    for (i, b) in whole.bytes().chain(fraction.bytes()).enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        if digits < 1_000_000_000_000_000_000 {
            digits = digits * 10 + u64::from(b - b'0');
            if i >= whole.len() {
                scale -= 1;
            }
        } else if i < whole.len() {
            scale += 1;
        }
    }
    let value = if scale >= 0 {
        digits as f64 * 10f64.powi(scale)
    } else {
        digits as f64 / 10f64.powi(-scale)
    };
    Some(if negative { -value } else { value })
}

pub fn as_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Decodes the inside of a validated JSON string.
fn decode(inner: &str, escaped: bool) -> std::borrow::Cow<'_, str> {
    if !escaped {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex = |chars: &mut std::str::Chars| {
                    let h: String = chars.by_ref().take(4).collect();
                    u32::from_str_radix(&h, 16).unwrap_or(0xFFFD)
                };
                let mut code = hex(&mut chars);
                if (0xD800..0xDC00).contains(&code) {
                    chars.next();
                    chars.next();
                    let low = hex(&mut chars);
                    code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                }
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn a_document_reads_nested_values_from_its_tape() {
        let text =
            r#" {"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"n":1} "#;
        let doc = Document::parse(text).unwrap();
        assert_eq!(doc.root(), text.trim());
        let body = doc.object(doc.root()).unwrap();
        let messages = body.get("messages").unwrap();
        let message = doc.items(messages).unwrap()[0];
        let content = doc.object(message).unwrap().get("content").unwrap();
        let part = doc.items(content).unwrap()[0];
        assert_eq!(doc.member(part, "type"), Some(r#""text""#));
        // Each of these was read from the tape, not by scanning again.
        for raw in [doc.root(), messages, message, content, part] {
            assert!(doc.node(raw).is_some(), "{raw}");
        }
        // Text that is not this document's, or equal text elsewhere, is scanned.
        let copy = message.to_string();
        assert!(doc.node(&copy).is_none());
        assert_eq!(doc.members(&copy), members(message));
    }

    #[test]
    fn values_below_the_tape_or_past_its_size_are_scanned() {
        let deep = r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}"#;
        let doc = Document::parse(deep).unwrap();
        let mut raw = doc.root();
        for key in ["a", "b", "c", "d", "e", "f"] {
            raw = doc.member(raw, key).unwrap();
        }
        assert_eq!(raw, r#"{"g":1}"#);
        assert!(doc.node(raw).is_none(), "depth 6 is below the tape");

        let many = format!("[{}0]", "0,".repeat(TAPE_MAX_NODES));
        let doc = Document::parse(&many).unwrap();
        assert!(doc.tape.is_none());
        assert_eq!(doc.items(doc.root()).unwrap().len(), TAPE_MAX_NODES + 1);
    }

    #[test]
    fn agrees_with_serde_json_on_validity() {
        let cases = [
            "{}",
            "[]",
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1.5",
            "-1e10",
            "1E+2",
            "\"x\"",
            "\"\\u00e9\\ud83d\\ude00\"",
            r#"{"a":[1,{"b":null}],"c":"\n"}"#,
            " { \"a\" : 1 } ",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "-",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\"1}",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\nb\"",
            "[1 2]",
            "nul",
            "tru",
            "{\"a\":1}}",
            "",
            "  ",
            "\"unterminated",
            "[[[]]]",
            "{\"\":\"\"}",
            "\"\\/\"",
        ];
        for text in cases {
            let ours = validate(text).is_ok();
            let serde = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(ours, serde, "{text:?}");
        }
    }

    #[test]
    fn depth_is_limited() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(validate(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(validate(&deep).unwrap_err().what, "nested too deeply");
        let bomb = "[".repeat(1_000_000);
        assert!(validate(&bomb).is_err());
    }

    #[test]
    fn objects_arrays_and_scalars() {
        let found = members(r#"{"b":[1, 2],"a\u0062":"x\"y","b":{"c":true}}"#).unwrap();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, vec!["b", "ab", "b"]);
        assert_eq!(found[0].1, "[1, 2]");
        assert_eq!(member(r#"{"b":1,"b":2}"#, "b"), Some("2"));
        assert_eq!(as_str(found[1].1).as_deref(), Some("x\"y"));
        assert_eq!(items(" [1, \"a\", {}] ").unwrap(), vec!["1", "\"a\"", "{}"]);
        assert_eq!(members("[1]").unwrap_err().what, "expected an object");
        assert_eq!(members("{").unwrap_err().what, "expected a string key");
        assert_eq!(items("{}").unwrap_err().what, "expected a list");
        assert_eq!(
            as_str("\"\\ud83d\\ude00 \\u00e9\\n\"").as_deref(),
            Some("😀 é\n")
        );
        assert_eq!(as_str("7"), None);
        assert_eq!(as_u64("42"), Some(42));
        assert_eq!(as_u64("-1"), None);
        assert_eq!(as_u64("1.5"), None);
        assert_eq!(as_i64("-3"), Some(-3));
        assert_eq!(as_f64("-2.5e1"), Some(-25.0));
        assert_eq!(as_f64("\"1\""), None);
        for (text, want) in [
            ("2", 2.0),
            ("2.0", 2.0),
            ("0.2", 0.2),
            ("1e-2", 0.01),
            ("-0", 0.0),
            ("1.5E3", 1500.0),
            ("0.000001", 1e-6),
        ] {
            assert_eq!(as_f64(text), Some(want), "{text}");
        }
        assert_eq!(as_f64("2.0000001").map(|v| v > 2.0), Some(true));
        assert_eq!(as_f64("1."), None);
        assert_eq!(decimal("7.66"), Some(7.66));
        assert_eq!(decimal("59.56"), Some(59.56));
        assert_eq!(as_bool("true"), Some(true));
        assert_eq!(as_bool("1"), None);
    }
}
