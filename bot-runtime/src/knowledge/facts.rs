//! A document's facts: what one chunk holds. A price row, an FAQ pair or an
//! address block is one fact, found and quoted whole, and it carries the
//! headings above it (its path: "# Прайс-лист / ## Лечение") so a row that
//! says only "Анестезия — 3 000 ₸" still says what it is. A long price list
//! in one chunk was almost never the first found: its rows were diluted by
//! each other.
//!
//! In a Markdown section: a table's rows and the items of a list whose items
//! carry values (a price, a time, a sentence of their own) are a fact each;
//! the rest (paragraphs, lists of names) is the section's prose, cut again
//! where a paragraph asks a question, so each question and its answer stay
//! together. CSV and spreadsheet rows are facts through [`row_fact`].

/// One fact and the heading lines above it, outermost first.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fact {
    pub(super) path: Vec<String>,
    pub(super) text: String,
}

/// A row as a fact: "Header: value; Header: value" (empty cells left out).
pub(super) fn row_fact(
    context: Option<&str>,
    headers: &[String],
    values: &[String],
) -> Option<String> {
    let cells: Vec<String> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(
            |(i, v)| match headers.get(i).map(|h| h.trim()).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {}", v.trim()),
                None => v.trim().to_owned(),
            },
        )
        .collect();
    if cells.is_empty() {
        return None;
    }
    Some(match context {
        Some(c) => format!("{c}; {}", cells.join("; ")),
        None => cells.join("; "),
    })
}

/// The facts of a Markdown text, in its order.
pub(super) fn facts(text: &str) -> Vec<Fact> {
    sections(text)
        .into_iter()
        .flat_map(|(path, body)| {
            section_facts(&body).into_iter().map(move |text| Fact {
                path: path.clone(),
                text,
            })
        })
        .collect()
}

/// `## Оплата` → 2; a `#hashtag` is no heading.
fn heading_level(line: &str) -> Option<usize> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with(' '))).then_some(level)
}

/// The sections of a text (outside code fences): each body with the
/// headings it stands under. A heading with no body of its own only names
/// the sections under it.
fn sections(text: &str) -> Vec<(Vec<String>, String)> {
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    let mut body = String::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fenced = !fenced;
        }
        match heading_level(trimmed).filter(|_| !fenced) {
            Some(level) => {
                if !body.trim().is_empty() {
                    out.push((
                        path.iter().map(|(_, h)| h.clone()).collect(),
                        std::mem::take(&mut body),
                    ));
                }
                body.clear();
                path.retain(|(l, _)| *l < level);
                path.push((level, trimmed.trim_end().to_owned()));
            }
            None => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    if !body.trim().is_empty() {
        out.push((path.into_iter().map(|(_, h)| h).collect(), body));
    }
    out
}

/// A block of a section's body.
enum Block {
    Paragraph(String),
    Item(String),
    Table(Vec<String>),
}

fn list_item(line: &str) -> Option<&str> {
    if line.len() - line.trim_start().len() > 1 {
        return None;
    }
    let line = line.trim_start();
    for marker in ["- ", "* ", "+ ", "• "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return Some(rest);
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    (digits > 0)
        .then(|| &line[digits..])
        .and_then(|rest| rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")))
}

/// Paragraphs, list items (with their continuation and nested lines) and
/// tables; a code fence stays in its paragraph.
fn blocks(body: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut open = false; // the last block takes more lines
    let mut fenced = false;
    for line in body.lines() {
        let trimmed = line.trim();
        if fenced || trimmed.starts_with("```") {
            if trimmed.starts_with("```") {
                fenced = !fenced;
            }
            match out.last_mut() {
                Some(Block::Paragraph(p)) if open => p.push_str(&format!("\n{line}")),
                _ => out.push(Block::Paragraph(line.to_owned())),
            }
            open = true;
            continue;
        }
        if trimmed.is_empty() {
            // An indented line after a blank still belongs to its item.
            open = false;
            continue;
        }
        let indented = line.len() - line.trim_start().len() >= 2;
        if trimmed.starts_with('|') {
            match out.last_mut() {
                Some(Block::Table(rows)) if open => rows.push(trimmed.to_owned()),
                _ => out.push(Block::Table(vec![trimmed.to_owned()])),
            }
        } else if let Some(item) = list_item(line) {
            out.push(Block::Item(item.trim().to_owned()));
        } else {
            match out.last_mut() {
                Some(Block::Item(i)) if open || indented => i.push_str(&format!("\n{trimmed}")),
                Some(Block::Paragraph(p)) if open => p.push_str(&format!("\n{line}")),
                _ => out.push(Block::Paragraph(line.to_owned())),
            }
        }
        open = true;
    }
    out
}

/// A list item that is a fact of its own: it carries a value (a digit) or a
/// sentence, not just a name ("Toyota", "наличные").
fn holds_value(item: &str) -> bool {
    item.chars().any(|c| c.is_ascii_digit()) || item.chars().count() >= 40
}

fn table_rows(lines: &[String]) -> Option<Vec<String>> {
    let cells = |line: &str| -> Vec<String> {
        let line = line.trim().trim_start_matches('|').trim_end_matches('|');
        line.split('|')
            .map(|c| c.trim().replace("**", ""))
            .collect()
    };
    let separator = |line: &str| line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
    if lines.len() < 3 || !separator(&lines[1]) {
        return None;
    }
    let headers = cells(&lines[0]);
    Some(
        lines[2..]
            .iter()
            .filter(|l| !separator(l))
            .filter_map(|l| row_fact(None, &headers, &cells(l)))
            .collect(),
    )
}

/// "**Можно ли вернуть?**" or "В: Вы работаете в выходные?" starts a pair.
fn asks(paragraph: &str) -> bool {
    let first = paragraph.lines().next().unwrap_or_default();
    first.replace(['*', '_'], "").trim_end().ends_with('?')
}

/// The facts of one section's body.
fn section_facts(body: &str) -> Vec<String> {
    let blocks = blocks(body);
    let mut facts = Vec::new();
    // The prose, in pieces that each start with a question (or the start).
    let mut prose: Vec<String> = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        match &blocks[i] {
            Block::Table(lines) => match table_rows(lines) {
                Some(rows) => facts.extend(rows),
                None => push_prose(&mut prose, lines.join("\n")),
            },
            Block::Paragraph(p) => push_prose(&mut prose, p.clone()),
            Block::Item(_) => {
                let items: Vec<&String> = blocks[i..]
                    .iter()
                    .map_while(|b| match b {
                        Block::Item(text) => Some(text),
                        _ => None,
                    })
                    .collect();
                let valued = items.iter().filter(|t| holds_value(t)).count();
                if items.len() >= 2 && valued * 2 >= items.len() {
                    // "Доставка по районам:" introduces each row of its list.
                    let intro = prose
                        .last()
                        .and_then(|p| p.lines().last())
                        .filter(|l| l.trim_end().ends_with(':'))
                        .map(|l| l.trim().to_owned());
                    if let Some(intro) = &intro {
                        drop_last_line(&mut prose, intro);
                    }
                    facts.extend(items.iter().map(|t| match &intro {
                        Some(intro) => format!("{intro} {t}"),
                        None => format!("- {t}"),
                    }));
                } else {
                    let list = items.iter().map(|t| format!("- {t}")).collect::<Vec<_>>();
                    push_prose(&mut prose, list.join("\n"));
                }
                i += items.len();
                continue;
            }
        }
        i += 1;
    }
    let mut out: Vec<String> = prose.into_iter().filter(|p| !p.trim().is_empty()).collect();
    out.extend(facts);
    out
}

/// A paragraph joins the prose piece before it, unless it asks a question.
fn push_prose(prose: &mut Vec<String>, paragraph: String) {
    match prose.last_mut() {
        Some(last) if !asks(&paragraph) => {
            last.push_str("\n\n");
            last.push_str(&paragraph);
        }
        _ => prose.push(paragraph),
    }
}

fn drop_last_line(prose: &mut Vec<String>, line: &str) {
    if let Some(last) = prose.last_mut() {
        let kept = last
            .trim_end()
            .strip_suffix(line)
            .unwrap_or(last)
            .trim_end()
            .to_owned();
        *last = kept;
    }
    if prose.last().is_some_and(|p| p.is_empty()) {
        prose.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(md: &str) -> Vec<(String, String)> {
        facts(md)
            .into_iter()
            .map(|f| (f.path.join(" / "), f.text))
            .collect()
    }

    #[test]
    fn a_price_row_is_a_fact_with_its_heading_path() {
        let md = "# Прайс-лист\n\n## Лечение\n### Взрослые\n- Лечение кариеса — от 18 000 ₸\n- Анестезия — 3 000 ₸\n\n## Марки\n- Toyota\n- Kia\n";
        assert_eq!(
            texts(md),
            [
                (
                    "# Прайс-лист / ## Лечение / ### Взрослые".into(),
                    "- Лечение кариеса — от 18 000 ₸".into()
                ),
                (
                    "# Прайс-лист / ## Лечение / ### Взрослые".into(),
                    "- Анестезия — 3 000 ₸".into()
                ),
                // Names are no facts apart: the list stays whole.
                ("# Прайс-лист / ## Марки".into(), "- Toyota\n- Kia".into()),
            ]
        );
    }

    #[test]
    fn a_list_keeps_its_introduction_and_a_table_its_header() {
        let md = "## Доставка\nВезём каждый день.\nДоставка по районам:\n- Алматы — 2 000 ₸\n- Каскелен — 4 000 ₸\n  по договорённости\n\n| Букет | Цена |\n|---|---|\n| 25 роз | **27 000 ₸** |\n";
        assert_eq!(
            texts(md).into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
            [
                "Везём каждый день.",
                "Доставка по районам: Алматы — 2 000 ₸",
                "Доставка по районам: Каскелен — 4 000 ₸\nпо договорённости",
                "Букет: 25 роз; Цена: 27 000 ₸",
            ]
        );
    }

    #[test]
    fn each_question_keeps_its_answer() {
        let md = "## Вопросы\nОтвечаем на частые вопросы.\n\n**Можно ли вернуть букет?**\nДа, в течение 2 часов.\n\nПришлите фото.\n\n**Вы работаете в выходные?**\nДа, ежедневно.\n";
        let got: Vec<String> = texts(md).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            got,
            [
                "Отвечаем на частые вопросы.",
                "**Можно ли вернуть букет?**\nДа, в течение 2 часов.\n\nПришлите фото.",
                "**Вы работаете в выходные?**\nДа, ежедневно.",
            ]
        );
    }

    #[test]
    fn an_address_block_and_fenced_code_stay_whole() {
        let md = "# Контакты\n#hashtag is text\nг. Алматы, пр. Абая 150\n+7 700 000 00 00\n\n```\n# not a heading\n- nor an item 1\n- 2\n```\n";
        let got = texts(md);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].0, "# Контакты");
        assert!(
            got[0]
                .1
                .starts_with("#hashtag is text\nг. Алматы, пр. Абая 150\n+7 700"),
            "{got:#?}"
        );
        assert!(
            got[0].1.contains("# not a heading\n- nor an item 1"),
            "{got:#?}"
        );
    }
}
