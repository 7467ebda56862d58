//! Documents into chunks: Markdown, text, HTML pages (through Markdown) and
//! Word documents as facts ([`facts`]: a row, an item with a value, a
//! question and its answer, a section's prose) after their heading path,
//! prose past the budget (≈500 tokens, 50 overlap by default:
//! knowledge.chunking; text-splitter, tokens counted with tiktoken's cl100k)
//! split again; PDFs by paragraphs; CSV and spreadsheet price lists one row
//! per fact with the header (and sheet name) as context.

use anyhow::{Context, Result, bail};
use text_splitter::{ChunkConfig, MarkdownSplitter};
use tiktoken_rs::CoreBPE;

use super::facts::{self, row_fact};

/// The chunker's version, part of each document's stored hash: changing how
/// documents are cut (here: one chunk per fact) changes it, and the next sync
/// indexes every document again.
pub const CHUNKING: &[u8] = b"facts-1\0";

pub struct Chunker {
    splitter: MarkdownSplitter<CoreBPE>,
}

impl Chunker {
    /// Checks the sizes without loading the tokenizer; returns them.
    pub fn check(max_tokens: usize, overlap_tokens: usize) -> Result<(usize, usize)> {
        ChunkConfig::new(max_tokens)
            .with_overlap(overlap_tokens)
            .context("chunk overlap must be smaller than the chunk size")?;
        Ok((max_tokens, overlap_tokens))
    }

    pub fn new(max_tokens: usize, overlap_tokens: usize) -> Result<Self> {
        let tokenizer = tiktoken_rs::cl100k_base().context("loading the cl100k tokenizer")?;
        let config = ChunkConfig::new(max_tokens)
            .with_overlap(overlap_tokens)
            .context("chunk overlap must be smaller than the chunk size")?
            .with_sizer(tokenizer);
        Ok(Self {
            splitter: MarkdownSplitter::new(config),
        })
    }

    /// The chunks of one file; the format comes from its name. Unsupported or
    /// unreadable files, archives past [`MAX_UNPACKED_BYTES`] or
    /// [`MAX_ARCHIVE_ENTRIES`], and a parser's panic are an error the sync
    /// records against the document. CPU-bound: call it off the async workers.
    pub fn split(&self, file_name: &str, content: &[u8]) -> Result<Vec<String>> {
        let extension = file_name
            .rsplit_once('.')
            .map(|(_, e)| e.to_lowercase())
            .unwrap_or_default();
        if matches!(extension.as_str(), "docx" | "xlsx" | "xlsm" | "ods") {
            archive_within_limits(content)?;
        }
        // Parsers of untrusted files may panic (a bug on a malformed file):
        // that is this document's failure, never the process's.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.split_format(&extension, content)
        }))
        .unwrap_or_else(|_| bail!("the .{extension} parser failed on this file (malformed?)"))
    }

    fn split_format(&self, extension: &str, content: &[u8]) -> Result<Vec<String>> {
        // Windows editors and Excel's "CSV UTF-8" start text with a byte-order
        // mark; left in, it hides the title heading or the first column's name.
        let content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
        match extension {
            "md" | "markdown" | "txt" | "text" | "" => {
                let text = std::str::from_utf8(content).context("the file is not UTF-8 text")?;
                Ok(self.markdown(text))
            }
            "docx" => Ok(self.markdown(&docx_text(content)?)),
            "pdf" => Ok(self.markdown(&pdf_text(content)?)),
            "html" | "htm" => Ok(self.markdown(&html_markdown(content)?)),
            "csv" => csv_rows(content),
            "xlsx" | "xlsm" | "xls" | "ods" => spreadsheet_rows(content),
            other => {
                bail!(
                    "unsupported format .{other} (supported: .md, .txt, .html, .pdf, .docx, .csv, .xlsx, .xls, .ods)"
                )
            }
        }
    }
}

impl Chunker {
    /// One chunk per fact ([`facts`]: a row, an FAQ pair, a section's prose),
    /// each after the heading lines above it; prose past the token budget is
    /// split again.
    fn markdown(&self, text: &str) -> Vec<String> {
        let mut chunks = Vec::new();
        for fact in facts::facts(text) {
            let path = fact.path.join("\n");
            for piece in self
                .splitter
                .chunks(&fact.text)
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                chunks.push(if path.is_empty() {
                    piece.to_owned()
                } else {
                    format!("{path}\n{piece}")
                });
            }
        }
        chunks
    }
}

/// A web page as Markdown: headings, paragraphs, lists and tables kept;
/// scripts, styles and other markup that is no text left out.
fn html_markdown(content: &[u8]) -> Result<String> {
    let html = std::str::from_utf8(content).context("the page is not UTF-8")?;
    let markdown = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "head", "script", "style", "noscript", "svg", "template", "iframe", "form",
        ])
        .build()
        .convert(html)
        .context("the page could not be read as HTML")?;
    if markdown.trim().is_empty() {
        bail!("the page has no text");
    }
    Ok(markdown)
}

/// The text of a PDF, page by page. PDFs carry no headings, so the chunker
/// splits them by paragraphs within the token budget. pdf-extract panics on
/// some malformed files; a panic is this file's error, not the sync's end.
fn pdf_text(content: &[u8]) -> Result<String> {
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(content))
        .map_err(|_| anyhow::anyhow!("the PDF could not be read"))?
        .context("the PDF could not be read")?;
    // Justified lines come out with runs of spaces: one is enough for the
    // embedder and for a phrase search.
    let text = pages
        .iter()
        .map(|page| {
            page.lines()
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|page| !page.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    if text.is_empty() {
        bail!("the PDF has no text layer (a scan?)");
    }
    Ok(text)
}

/// An Office or OpenDocument file is a zip archive: what it unpacks to is
/// measured (by decompressing, not by trusting its headers) before a parser
/// reads it, so a zip bomb is refused for the price of the cap.
pub const MAX_UNPACKED_BYTES: u64 = 200 * 1024 * 1024;
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;

fn archive_within_limits(content: &[u8]) -> Result<()> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(content)).context("not a zip-based document")?;
    if archive.len() > MAX_ARCHIVE_ENTRIES {
        bail!(
            "the archive has {} entries (at most {MAX_ARCHIVE_ENTRIES})",
            archive.len()
        );
    }
    let mut unpacked = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .with_context(|| format!("reading entry {i} of the archive"))?;
        let left = MAX_UNPACKED_BYTES - unpacked;
        let mut bounded = std::io::Read::take(entry, left + 1);
        unpacked += std::io::copy(&mut bounded, &mut std::io::sink())
            .with_context(|| format!("unpacking entry {i} of the archive"))?;
        if unpacked > MAX_UNPACKED_BYTES {
            bail!(
                "the archive unpacks to more than {} MiB (a zip bomb?)",
                MAX_UNPACKED_BYTES / 1024 / 1024
            );
        }
    }
    Ok(())
}

/// The text of a Word document as Markdown: paragraphs, with its heading
/// styles (Heading1…, Title, Заголовок1…) as `#` headings for the chunker.
fn docx_text(content: &[u8]) -> Result<String> {
    use std::io::Read;

    use quick_xml::events::Event;

    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(content)).context("not a DOCX (zip) file")?;
    let mut xml = String::new();
    archive
        .by_name("word/document.xml")
        .context("the DOCX has no word/document.xml")?
        .read_to_string(&mut xml)
        .context("word/document.xml is not UTF-8")?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut out, mut paragraph) = (String::new(), String::new());
    let (mut heading, mut in_text) = (None::<usize>, false);
    loop {
        match reader
            .read_event()
            .context("word/document.xml is not well-formed")?
        {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "w:pStyle" => {
                if let Some(style) = e.try_get_attribute("w:val").ok().flatten() {
                    heading = heading_level(
                        &style
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap_or_default(),
                    );
                }
            }
            Event::Start(e) if e.name().as_ref() == "w:t" => in_text = true,
            Event::End(e) if e.name().as_ref() == "w:t" => in_text = false,
            Event::Text(t) if in_text => paragraph.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                let text = match r.resolve_char_ref().ok().flatten() {
                    Some(c) => c.to_string(),
                    None => match r.xml10_content().as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        _ => String::new(),
                    },
                };
                paragraph.push_str(&text);
            }
            Event::Empty(e) if e.name().as_ref() == "w:tab" => paragraph.push(' '),
            Event::End(e) if e.name().as_ref() == "w:p" => {
                let text = paragraph.trim();
                if !text.is_empty() {
                    if let Some(level) = heading {
                        out.push_str(&"#".repeat(level));
                        out.push(' ');
                    }
                    out.push_str(text);
                    out.push_str("\n\n");
                }
                paragraph.clear();
                heading = None;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if out.trim().is_empty() {
        bail!("the DOCX has no text (or its word/document.xml is cut short)");
    }
    Ok(out)
}

/// `Heading2` → 2, `Title` → 1; Word localizes style ids (`Заголовок2`).
fn heading_level(style: &str) -> Option<usize> {
    let lower = style.to_lowercase();
    if lower == "title" {
        return Some(1);
    }
    let digits = lower
        .strip_prefix("heading")
        .or_else(|| lower.strip_prefix("заголовок"))?;
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=6).contains(l))
}

/// One fact per row of a CSV price list, with its header.
fn csv_rows(content: &[u8]) -> Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(content);
    let headers: Vec<String> = reader
        .headers()
        .context("reading the CSV header")?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut facts = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("CSV row {}", line + 2))?;
        let values: Vec<String> = record.iter().map(str::to_owned).collect();
        facts.extend(row_fact(None, &headers, &values));
    }
    Ok(facts)
}

/// One fact per row of every sheet (Excel, LibreOffice), with the sheet's
/// name and its first non-empty row as the header.
fn spreadsheet_rows(content: &[u8]) -> Result<Vec<String>> {
    use calamine::Reader;
    let mut workbook = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(content))
        .context("not a readable spreadsheet")?;
    let mut facts = Vec::new();
    for (sheet, range) in workbook.worksheets() {
        let mut rows = range
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect::<Vec<String>>())
            .filter(|r| r.iter().any(|c| !c.trim().is_empty()));
        let Some(headers) = rows.next() else { continue };
        for values in rows {
            facts.extend(row_fact(Some(&sheet), &headers, &values));
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_hides_no_title_and_no_column() {
        let chunker = Chunker::new(500, 50).expect("a chunker");
        let md = "\u{feff}# Цветы Алматы\n\n## Доставка\n\nПо Алматы 2 000 ₸.\n";
        let chunks = chunker.split("faq.md", md.as_bytes()).expect("chunks");
        assert!(chunks[0].starts_with("# Цветы Алматы"), "{chunks:?}");
        let csv = "\u{feff}Товар,Цена\nБукет из 25 роз,27 000 ₸\n";
        let rows = chunker.split("prices.csv", csv.as_bytes()).expect("rows");
        assert!(rows[0].contains("Товар: Букет из 25 роз"), "{rows:?}");
        assert!(!rows[0].contains('\u{feff}'), "{rows:?}");
    }

    #[test]
    fn markdown_is_split_by_headings_within_the_token_budget() {
        let chunker = Chunker::new(60, 10).expect("tokenizer");
        let section = |title: &str| {
            format!(
                "## {title}\n\n{}\n\n",
                "Свежие цветы каждый день. ".repeat(8)
            )
        };
        let doc = format!(
            "# Цветы Алматы\n\n{}{}{}",
            section("Доставка"),
            section("Оплата"),
            section("Часы работы")
        );
        let chunks = chunker.split("faq.md", doc.as_bytes()).expect("chunks");
        assert!(chunks.len() >= 3, "{chunks:#?}");
        let bpe = tiktoken_rs::cl100k_base().expect("tokenizer");
        // The budget, plus the heading lines that say what a piece is about.
        for c in &chunks {
            let (path, body): (Vec<&str>, Vec<&str>) = c.lines().partition(|l| l.starts_with('#'));
            let path = bpe.encode_ordinary(&path.join("\n")).len();
            assert!(
                path > 0 && bpe.encode_ordinary(&body.join("\n")).len() <= 60,
                "{c}"
            );
            assert!(bpe.encode_ordinary(c).len() <= 60 + path + 1, "{c}");
        }
        assert!(
            chunks
                .iter()
                .any(|c| c.starts_with("# Цветы Алматы\n## Оплата")),
            "a heading starts a chunk: {chunks:#?}"
        );
    }

    #[test]
    fn each_section_is_a_chunk_that_names_its_document() {
        let doc = "# Частые вопросы\n\n## Часы работы\nС 8:00 до 22:00.\n\n## Оплата\nKaspi Pay.\n\n```\n# not a heading\n```\n";
        let chunks = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("faq.md", doc.as_bytes())
            .expect("chunks");
        assert_eq!(chunks.len(), 2, "{chunks:#?}");
        assert!(
            chunks[0].starts_with("# Частые вопросы")
                && chunks[0].contains("## Часы работы")
                && chunks[0].contains("8:00")
        );
        assert!(
            chunks[1].starts_with("# Частые вопросы\n## Оплата"),
            "{chunks:#?}"
        );
        assert!(
            chunks[1].contains("# not a heading"),
            "fenced code stays in its section"
        );
    }

    #[test]
    fn a_price_list_row_is_one_fact_with_its_header() {
        let csv = "Товар,Цена,Наличие\nБукет из 25 роз,27 000 ₸,есть\n\"Композиция «Нежность»\",22 500 ₸,\n";
        let facts = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("prices.csv", csv.as_bytes())
            .expect("facts");
        assert_eq!(
            facts,
            [
                "Товар: Букет из 25 роз; Цена: 27 000 ₸; Наличие: есть",
                "Товар: Композиция «Нежность»; Цена: 22 500 ₸"
            ]
        );
    }

    #[test]
    fn a_spreadsheet_row_is_one_fact_with_its_sheet_and_header() {
        let xlsx = include_bytes!("../../tests/fixtures/prices.xlsx");
        let facts = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("Прайс.xlsx", xlsx)
            .expect("facts");
        assert_eq!(
            facts,
            [
                "Букеты; Товар: Букет из 25 роз; Цена, ₸: 27000; Наличие: есть",
                "Букеты; Товар: Композиция «Нежность»; Цена, ₸: 22500",
                "Доставка; Район: Алматы; Стоимость, ₸: 2000",
                "Доставка; Район: Каскелен; Стоимость, ₸: 4000",
            ]
        );
        assert!(
            Chunker::new(500, 50)
                .expect("tokenizer")
                .split("broken.xlsx", b"PK\x03\x04 not a zip")
                .is_err()
        );
    }

    /// A minimal Word document: the parts Word itself needs to open it.
    fn docx(body: &str) -> Vec<u8> {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        let document = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
        );
        zip.start_file("[Content_Types].xml", options).expect("zip");
        zip.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#).expect("zip");
        zip.start_file("word/document.xml", options).expect("zip");
        zip.write_all(document.as_bytes()).expect("zip");
        zip.finish().expect("zip").into_inner()
    }

    #[test]
    fn a_word_document_keeps_its_headings_and_paragraphs() {
        let p = |style: &str, text: &str| {
            let style = if style.is_empty() {
                String::new()
            } else {
                format!(r#"<w:pPr><w:pStyle w:val="{style}"/></w:pPr>"#)
            };
            format!("<w:p>{style}<w:r><w:t>{text}</w:t></w:r></w:p>")
        };
        let body = [
            p("Title", "Условия доставки"),
            p("Heading2", "Сроки"),
            p("", "Привозим за 2&#8211;3 часа, R&amp;D не при чём."),
            p("Заголовок2", "Оплата"),
            p("", "Kaspi QR и наличные."),
        ]
        .concat();
        let chunks = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("Доставка.docx", &docx(&body))
            .expect("chunks");
        assert_eq!(chunks.len(), 2, "{chunks:#?}");
        assert_eq!(
            chunks[0],
            "# Условия доставки\n## Сроки\nПривозим за 2–3 часа, R&D не при чём."
        );
        assert_eq!(
            chunks[1],
            "# Условия доставки\n## Оплата\nKaspi QR и наличные."
        );
        assert!(
            Chunker::new(500, 50)
                .expect("tokenizer")
                .split("x.docx", b"PK\x03\x04 broken")
                .is_err()
        );
    }

    #[test]
    fn a_web_page_keeps_its_sections_and_loses_its_markup() {
        let page = r#"<!doctype html><html><head><title>Цветы Алматы</title>
            <style>body { color: red }</style><script>track("visit")</script></head>
            <body><nav><a href="/">Главная</a></nav>
            <h1>Доставка</h1><p>По Алматы — <b>2 000 ₸</b>, от 30 000 ₸ бесплатно.</p>
            <h2>Самовывоз</h2><ul><li>ул. Абая, 10</li><li>ежедневно 9:00–21:00</li></ul>
            <table><tr><th>Букет</th><th>Цена</th></tr><tr><td>25 роз</td><td>27 000 ₸</td></tr></table>
            </body></html>"#;
        let chunks = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("delivery.html", page.as_bytes())
            .expect("an HTML page");
        let all = chunks.join("\n---\n");
        assert!(chunks.len() >= 2, "{all}");
        assert!(
            all.contains("2 000 ₸") && all.contains("ул. Абая, 10"),
            "{all}"
        );
        assert!(all.contains("27 000 ₸"), "tables are text too: {all}");
        assert!(
            chunks
                .iter()
                .any(|c| c.contains("Самовывоз") && c.contains("Абая")),
            "a section is a chunk with its heading: {all}"
        );
        for markup in ["<", "track(", "color: red"] {
            assert!(!all.contains(markup), "{markup} in {all}");
        }
        assert!(
            Chunker::new(500, 50)
                .expect("tokenizer")
                .split("empty.html", b"<html><script>x()</script></html>")
                .is_err()
        );
    }

    #[test]
    fn a_pdf_is_read_page_by_page() {
        // Made with fpdf2 and DejaVu Sans (an embedded subset font with a
        // ToUnicode map, as office suites write them): two pages, Russian
        // and Kazakh.
        let pdf = include_bytes!("../../tests/fixtures/policy.pdf");
        let chunks = Chunker::new(500, 50)
            .expect("tokenizer")
            .split("Возврат.pdf", pdf)
            .expect("a PDF");
        let all = chunks.join("\n---\n");
        for text in ["Условия возврата", "24 часов", "сағат ішінде", "скидка 10%"]
        {
            assert!(all.contains(text), "{text} not in {all}");
        }
        let cut = &pdf[..pdf.len() / 2];
        assert!(
            Chunker::new(500, 50)
                .expect("tokenizer")
                .split("cut.pdf", cut)
                .is_err()
        );
    }

    #[test]
    fn unsupported_and_broken_files_are_errors() {
        let chunker = Chunker::new(500, 50).expect("tokenizer");
        assert!(chunker.split("scan.pdf", b"%PDF-1.7").is_err());
        assert!(chunker.split("photo.jpg", b"\xff\xd8\xff").is_err());
        assert!(chunker.split("notes.md", &[0xff, 0xfe, 0x00]).is_err());
    }

    /// A zip whose one entry (named `entry`) is `size` zero bytes.
    fn zip_of_zeros(entry: &str, size: usize) -> Vec<u8> {
        use std::io::Write;
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(size > u32::MAX as usize);
        out.start_file(entry, options).expect("entry");
        let block = vec![0u8; 1024 * 1024];
        for _ in 0..size / block.len() {
            out.write_all(&block).expect("write");
        }
        out.finish().expect("zip").into_inner()
    }

    #[test]
    fn zip_bombs_and_malformed_office_files_fail_as_documents() {
        let chunker = Chunker::new(500, 50).expect("tokenizer");
        let bomb = zip_of_zeros("word/document.xml", 201 * 1024 * 1024);
        assert!(bomb.len() < 1024 * 1024, "a bomb: {} bytes", bomb.len());
        for name in ["bomb.docx", "bomb.xlsx", "bomb.ods"] {
            let error = chunker.split(name, &bomb).expect_err("refused");
            assert!(
                format!("{error:#}").contains("zip bomb"),
                "{name}: {error:#}"
            );
        }
        for name in ["broken.docx", "broken.xlsx", "broken.ods", "broken.xls"] {
            assert!(
                chunker.split(name, b"PK\x03\x04 not really").is_err(),
                "{name}"
            );
        }
        // A well-formed zip with malformed XML inside.
        let junk = {
            use std::io::Write;
            let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            out.start_file(
                "word/document.xml",
                zip::write::SimpleFileOptions::default(),
            )
            .expect("entry");
            out.write_all(b"<w:document><w:p><w:t>unclosed")
                .expect("write");
            out.finish().expect("zip").into_inner()
        };
        assert!(chunker.split("junk.docx", &junk).is_err());
        assert!(chunker.split("junk.xlsx", &junk).is_err());
    }
}
