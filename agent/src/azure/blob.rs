//! A Blob storage client for what the agent needs: list a container by
//! prefix (paging with NextMarker), download (whole, from an offset, or a
//! range), read a block blob's committed block list, delete, and (for
//! setting up tests and tools) create a container, upload, and put blocks
//! and block lists.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use quick_xml::events::Event;

use super::auth::Tokens;
use super::{check_endpoint, encode, error_text, redact, AzureError};

/// `x-ms-version` sent with every request: accepted by Azure and by Azurite.
pub const STORAGE_VERSION: &str = "2021-12-02";

pub enum BlobAuth {
    /// A SAS token (the query string, without `?`).
    Sas(String),
    /// An Entra ID token for `https://storage.azure.com/`.
    Bearer(Tokens),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobItem {
    pub name: String,
    pub etag: String,
    pub size: u64,
    pub created: Option<String>,
    pub modified: Option<String>,
}

/// What a (ranged, conditional) GET found.
pub enum Get {
    /// The bytes asked for, and the blob's ETag.
    Body {
        etag: String,
        reader: Box<dyn std::io::Read + Send>,
    },
    /// No such blob (any more).
    Gone,
    /// Not the blob the request was for: another ETag than `If-Match`, or
    /// shorter than the range's start.
    Changed,
}

/// One committed block of a block blob, as Get Block List gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block id as the service shows it (base64).
    pub id: String,
    pub size: u64,
}

/// A block blob's committed blocks, in order, and its ETag then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockList {
    pub etag: Option<String>,
    pub blocks: Vec<Block>,
}

/// An ETag without its quotes (and weak marker): a listing gives
/// `0x8D…`, a GET's header `"0x8D…"`, and the two must compare equal.
pub fn bare_etag(e: &str) -> String {
    let e = e.trim();
    e.strip_prefix("W/")
        .unwrap_or(e)
        .trim_matches('"')
        .to_string()
}

pub struct BlobClient {
    http: ureq::Agent,
    base: String,
    container: String,
    auth: BlobAuth,
}

enum Method {
    Get,
    Put,
    Delete,
}

impl BlobClient {
    /// `account_url`: `https://{account}.blob.core.windows.net`, or
    /// Azurite's `http://127.0.0.1:{port}/{account}`.
    pub fn new(account_url: &str, container: &str, auth: BlobAuth) -> Result<Self, AzureError> {
        check_endpoint(account_url, "blob storage")?;
        Ok(BlobClient {
            http: super::http_agent(Duration::from_secs(300)),
            base: account_url.trim_end_matches('/').to_string(),
            container: container.to_string(),
            auth,
        })
    }

    /// Trusts only the CA certificates in `pem` for this account's TLS.
    pub fn trusting(mut self, pem: &[u8]) -> Result<Self, AzureError> {
        self.http = super::http_agent_trusting(Duration::from_secs(300), pem)?;
        Ok(self)
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    fn secrets(&self) -> Vec<String> {
        match &self.auth {
            BlobAuth::Sas(s) => {
                let mut v = vec![s.clone()];
                // The signature alone, however it is quoted back.
                v.extend(
                    s.split('&')
                        .filter_map(|kv| kv.strip_prefix("sig="))
                        .map(str::to_string),
                );
                v
            }
            BlobAuth::Bearer(_) => Vec::new(),
        }
    }

    fn send(
        &mut self,
        method: Method,
        path: &str,
        query: &str,
        op: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<ureq::http::Response<ureq::Body>, AzureError> {
        let mut url = format!("{}/{}", self.base, path);
        let mut q = query.to_string();
        let mut bearer = None;
        match &mut self.auth {
            BlobAuth::Sas(s) => {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(s.trim_start_matches('?'));
            }
            BlobAuth::Bearer(t) => bearer = Some(t.token(&self.http)?),
        }
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q);
        }
        let date = http_date(std::time::SystemTime::now());
        let mut hs: Vec<(&str, String)> = vec![
            ("x-ms-version", STORAGE_VERSION.into()),
            ("x-ms-date", date),
        ];
        if let Some(b) = &bearer {
            hs.push(("Authorization", format!("Bearer {b}")));
        }
        for (k, v) in headers {
            hs.push((*k, v.to_string()));
        }
        let name = match method {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        };
        let res = super::request(&self.http, name, &url, &hs, body.unwrap_or_default());
        let mut secrets = self.secrets();
        secrets.extend(bearer);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut resp = res.map_err(|e| AzureError::Transport {
            op: op.to_string(),
            msg: redact(&e, &secrets),
        })?;
        let status = resp.status().as_u16();
        if status >= 300 {
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            let (code, mut message) = error_text(&body, &secrets);
            if status == 403 && matches!(self.auth, BlobAuth::Sas(_)) {
                message.push_str(
                    " (check the SAS token: its key, its expiry `se`, and that `sp` allows read and list, and delete when blobs are deleted)",
                );
            }
            if status == 401 {
                if let BlobAuth::Bearer(t) = &mut self.auth {
                    t.invalidate();
                }
            }
            return Err(AzureError::Status {
                op: op.to_string(),
                status,
                code,
                message,
            });
        }
        Ok(resp)
    }

    /// One page of the listing; the marker for the next page, if any.
    pub fn list_page(
        &mut self,
        prefix: &str,
        marker: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<BlobItem>, Option<String>), AzureError> {
        let mut q = format!(
            "restype=container&comp=list&prefix={}",
            encode(prefix, false)
        );
        if let Some(m) = marker {
            q.push_str(&format!("&marker={}", encode(m, false)));
        }
        if let Some(n) = max_results {
            q.push_str(&format!("&maxresults={n}"));
        }
        let op = format!("list container {}", self.container);
        let path = encode(&self.container, false);
        let mut resp = self.send(Method::Get, &path, &q, &op, None, &[])?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| AzureError::Transport {
                op: op.clone(),
                msg: e.to_string(),
            })?;
        parse_listing(&body).map_err(|msg| AzureError::Response { op, msg })
    }

    /// Every blob under `prefix`, following NextMarker.
    pub fn list(&mut self, prefix: &str, page: Option<u32>) -> Result<Vec<BlobItem>, AzureError> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let (items, next) = self.list_page(prefix, marker.as_deref(), page)?;
            all.extend(items);
            match next {
                Some(m) if Some(&m) != marker.as_ref() => marker = Some(m),
                _ => return Ok(all),
            }
        }
    }

    /// Downloads `name` into `to` (replaced atomically); its ETag, or `None`
    /// when the blob no longer exists.
    pub fn download(&mut self, name: &str, to: &Path) -> Result<Option<String>, AzureError> {
        let op = format!("download {name}");
        let (etag, mut reader) = match self.get(name, 0, None)? {
            Get::Body { etag, reader } => (etag, reader),
            Get::Gone => return Ok(None),
            // Unconditional from the start: neither can happen.
            Get::Changed => {
                return Err(AzureError::Response {
                    op,
                    msg: "the service refused a plain GET as a precondition failure".into(),
                })
            }
        };
        let io = |e: std::io::Error| AzureError::Transport {
            op: op.clone(),
            msg: e.to_string(),
        };
        let part = to.with_extension("part");
        let mut f = std::fs::File::create(&part).map_err(io)?;
        std::io::copy(&mut reader, &mut f).map_err(io)?;
        f.flush().map_err(io)?;
        drop(f);
        std::fs::rename(&part, to).map_err(io)?;
        Ok(Some(etag))
    }

    /// The bytes of `name` from offset `from` on (`x-ms-range`), only if its
    /// ETag is still `if_match` when one is given: what a blob that grew
    /// since it was read adds, without fetching what was read again.
    pub fn get(
        &mut self,
        name: &str,
        from: u64,
        if_match: Option<&str>,
    ) -> Result<Get, AzureError> {
        self.get_bytes(name, from, None, if_match)
    }

    /// Bytes `from..=to` of `name`, only if its ETag is still `if_match`
    /// when one is given: the blocks a block list says were added.
    pub fn get_range(
        &mut self,
        name: &str,
        from: u64,
        to: u64,
        if_match: Option<&str>,
    ) -> Result<Get, AzureError> {
        self.get_bytes(name, from, Some(to), if_match)
    }

    fn get_bytes(
        &mut self,
        name: &str,
        from: u64,
        to: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<Get, AzureError> {
        let op = format!("download {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        let range = match to {
            Some(to) => format!("bytes={from}-{to}"),
            None => format!("bytes={from}-"),
        };
        let quoted = if_match.map(|e| format!("\"{}\"", bare_etag(e)));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if from > 0 || to.is_some() {
            headers.push(("x-ms-range", &range));
        }
        if let Some(q) = &quoted {
            headers.push(("If-Match", q));
        }
        let resp = match self.send(Method::Get, &path, "", &op, None, &headers) {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(Get::Gone),
            // The ETag moved on, or the blob is now shorter than `from`.
            Err(e) if matches!(e.status(), Some(412 | 416)) => return Ok(Get::Changed),
            Err(e) => return Err(e),
        };
        let etag = bare_etag(
            resp.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        Ok(Get::Body {
            etag,
            reader: Box::new(resp.into_body().into_reader()),
        })
    }

    /// The committed blocks of block blob `name`; `None` when there is no
    /// such blob.
    pub fn block_list(&mut self, name: &str) -> Result<Option<BlockList>, AzureError> {
        let op = format!("get block list of {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        let q = "comp=blocklist&blocklisttype=committed";
        let mut resp = match self.send(Method::Get, &path, q, &op, None, &[]) {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(bare_etag);
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| AzureError::Transport {
                op: op.clone(),
                msg: e.to_string(),
            })?;
        let blocks = parse_block_list(&body).map_err(|msg| AzureError::Response { op, msg })?;
        Ok(Some(BlockList { etag, blocks }))
    }

    /// Stages a block of block blob `name` (tests and tools: what the
    /// flow-log service does as it appends).
    pub fn put_block(&mut self, name: &str, id: &str, bytes: &[u8]) -> Result<(), AzureError> {
        let op = format!("put block of {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        let q = format!("comp=block&blockid={}", encode(id, false));
        self.send(Method::Put, &path, &q, &op, Some(bytes), &[])?;
        Ok(())
    }

    /// Commits `ids` (staged or already committed) as the blob's blocks.
    pub fn put_block_list(&mut self, name: &str, ids: &[String]) -> Result<(), AzureError> {
        let op = format!("put block list of {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in ids {
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        self.send(
            Method::Put,
            &path,
            "comp=blocklist",
            &op,
            Some(xml.as_bytes()),
            &[],
        )?;
        Ok(())
    }

    /// Deletes `name`; `false` if it was already gone.
    pub fn delete(&mut self, name: &str) -> Result<bool, AzureError> {
        let op = format!("delete {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        match self.send(
            Method::Delete,
            &path,
            "",
            &op,
            None,
            &[("x-ms-delete-snapshots", "include")],
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the container (an existing one is fine).
    pub fn create_container(&mut self) -> Result<(), AzureError> {
        let op = format!("create container {}", self.container);
        let path = encode(&self.container, false);
        match self.send(Method::Put, &path, "restype=container", &op, Some(&[]), &[]) {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Uploads `bytes` as the block blob `name`.
    pub fn upload(&mut self, name: &str, bytes: &[u8]) -> Result<(), AzureError> {
        let op = format!("upload {name}");
        let path = format!("{}/{}", encode(&self.container, false), encode(name, true));
        self.send(
            Method::Put,
            &path,
            "",
            &op,
            Some(bytes),
            &[("x-ms-blob-type", "BlockBlob")],
        )?;
        Ok(())
    }
}

/// An element of an Azure XML answer, as [`walk_xml`] meets it.
enum Xml<'a> {
    /// `name` starts inside `parent`.
    Open {
        parent: Option<&'a str>,
        name: &'a str,
    },
    /// `name` (inside `parent`) ends; `text` is what it held directly, its
    /// entities resolved.
    Close {
        parent: Option<&'a str>,
        name: &'a str,
        text: String,
    },
}

/// Walks an Azure XML answer whose root element must be `root` (an empty
/// `<root/>` counts), handing each element's start and end to `f`. Unknown
/// elements pass by: the service adds some over time.
fn walk_xml(
    xml: &str,
    root: &str,
    mut f: impl FnMut(Xml) -> Result<(), String>,
) -> Result<(), String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut saw_root = false;
    let mut text = String::new();
    loop {
        match r.read_event().map_err(|e| format!("XML: {e}"))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != root {
                        return Err(format!("expected {root}, found {name}"));
                    }
                    saw_root = true;
                }
                f(Xml::Open {
                    parent: path.last().map(String::as_str),
                    name: &name,
                })?;
                path.push(name);
                text.clear();
            }
            Event::Empty(e) if path.is_empty() && e.local_name().as_ref() == root.as_bytes() => {
                saw_root = true;
            }
            Event::Text(t) => {
                text.push_str(&t.xml_content().map_err(|e| format!("XML text: {e}"))?)
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(g) => {
                let name = String::from_utf8_lossy(&g).into_owned();
                let c = match name.as_str() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => g.resolve_char_ref().ok().flatten(),
                };
                text.push(c.ok_or_else(|| format!("unknown entity &{name};"))?);
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                f(Xml::Close {
                    parent: path.last().map(String::as_str),
                    name: &name,
                    text: std::mem::take(&mut text),
                })?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(format!("no {root} in the answer"));
    }
    Ok(())
}

/// The blobs of one `List Blobs` page and its NextMarker.
pub fn parse_listing(xml: &str) -> Result<(Vec<BlobItem>, Option<String>), String> {
    let mut items = Vec::new();
    let mut cur: Option<BlobItem> = None;
    let mut next = None;
    walk_xml(xml, "EnumerationResults", |e| {
        match e {
            Xml::Open {
                parent: Some("Blobs"),
                name: "Blob",
            } => {
                cur = Some(BlobItem {
                    name: String::new(),
                    etag: String::new(),
                    size: 0,
                    created: None,
                    modified: None,
                })
            }
            Xml::Open { .. } => {}
            Xml::Close { parent, name, text } => match (name, parent, cur.as_mut()) {
                ("Name", Some("Blob"), Some(b)) => b.name = text,
                ("Etag", Some("Properties"), Some(b)) => b.etag = bare_etag(&text),
                ("Content-Length", Some("Properties"), Some(b)) => {
                    b.size = text.trim().parse().map_err(|_| "bad Content-Length")?
                }
                ("Creation-Time", Some("Properties"), Some(b)) => b.created = Some(text),
                ("Last-Modified", Some("Properties"), Some(b)) => b.modified = Some(text),
                ("NextMarker", Some("EnumerationResults"), _) if !text.trim().is_empty() => {
                    next = Some(text.trim().to_string());
                }
                ("Blob", Some("Blobs"), _) => {
                    if let Some(b) = cur.take() {
                        if b.name.is_empty() {
                            return Err("a blob without a name".into());
                        }
                        items.push(b);
                    }
                }
                _ => {}
            },
        }
        Ok(())
    })?;
    Ok((items, next))
}

/// The committed blocks of a Get Block List answer, in order; uncommitted
/// blocks are not committed ones.
pub fn parse_block_list(xml: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut cur: Option<(Option<String>, Option<u64>)> = None;
    walk_xml(xml, "BlockList", |e| {
        match e {
            Xml::Open {
                parent: Some("CommittedBlocks"),
                name: "Block",
            } => cur = Some((None, None)),
            Xml::Open { .. } => {}
            Xml::Close { parent, name, text } => match (name, parent, cur.as_mut()) {
                ("Name", Some("Block"), Some(b)) => b.0 = Some(text.trim().to_string()),
                ("Size", Some("Block"), Some(b)) => {
                    b.1 = Some(text.trim().parse().map_err(|_| "bad block Size")?)
                }
                ("Block", Some("CommittedBlocks"), _) => match cur.take() {
                    Some((Some(id), Some(size))) => blocks.push(Block { id, size }),
                    _ => return Err("a block without a name or size".into()),
                },
                _ => {}
            },
        }
        Ok(())
    })?;
    Ok(blocks)
}

/// RFC 1123 date for `x-ms-date`.
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = crate::calendar::civil_from_days(days);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let s = secs % 86_400;
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_pages_and_unknown_elements() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="network-watcher-logs">
  <Prefix>subscriptions/</Prefix><Marker/><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name>subscriptions/x/2025/01/31/packetcapture_16_39_41_077.cap</Name>
      <Properties><Creation-Time>Fri, 31 Jan 2025 16:39:41 GMT</Creation-Time>
        <Last-Modified>Fri, 31 Jan 2025 16:45:00 GMT</Last-Modified><Etag>0x8D1</Etag>
        <Content-Length>12345</Content-Length><BlobType>BlockBlob</BlobType><NewThing>1</NewThing>
      </Properties><Metadata/><OrMetadata/></Blob>
    <Blob><Name>a&amp;b.cap</Name><Properties><Etag>"0x8D2"</Etag><Content-Length>7</Content-Length></Properties></Blob>
    <BlobPrefix><Name>subscriptions/y/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!72!MDAwMDA2</NextMarker>
</EnumerationResults>"#;
        let (items, next) = parse_listing(xml).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].size, 12345);
        assert_eq!(items[0].etag, "0x8D1");
        // Quoted or not, an ETag is the same ETag.
        assert_eq!(items[1].etag, "0x8D2");
        assert_eq!(bare_etag("W/\"0x8D2\""), "0x8D2");
        assert_eq!(items[1].name, "a&b.cap");
        assert_eq!(next.as_deref(), Some("2!72!MDAwMDA2"));
        let last = xml.replace("<NextMarker>2!72!MDAwMDA2</NextMarker>", "<NextMarker/>");
        assert_eq!(parse_listing(&last).unwrap().1, None);
        assert!(parse_listing("<Error><Code>x</Code></Error>").is_err());
        assert!(parse_listing("not xml <<<").is_err());
    }

    #[test]
    fn block_lists() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<BlockList><CommittedBlocks>
  <Block><Name>MDAwMDA=</Name><Size>12</Size></Block>
  <Block><Name>MDAwMDE=</Name><Size>4096</Size><New/></Block>
</CommittedBlocks><UncommittedBlocks><Block><Name>eA==</Name><Size>9</Size></Block></UncommittedBlocks></BlockList>"#;
        let b = parse_block_list(xml).unwrap();
        assert_eq!(
            b,
            vec![
                Block {
                    id: "MDAwMDA=".into(),
                    size: 12
                },
                Block {
                    id: "MDAwMDE=".into(),
                    size: 4096
                }
            ]
        );
        assert_eq!(parse_block_list("<BlockList/>").unwrap(), vec![]);
        assert_eq!(
            parse_block_list("<BlockList><CommittedBlocks/></BlockList>").unwrap(),
            vec![]
        );
        for bad in [
            "",
            "<Error/>",
            "<BlockList><CommittedBlocks><Block><Name>x</Name></Block></CommittedBlocks></BlockList>",
            "<BlockList><CommittedBlocks><Block><Name>x</Name><Size>-1</Size></Block></CommittedBlocks></BlockList>",
            "<BlockList><<",
        ] {
            assert!(parse_block_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc1123_dates() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_738_341_581);
        assert_eq!(http_date(t), "Fri, 31 Jan 2025 16:39:41 GMT");
        assert_eq!(
            http_date(std::time::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }
}
