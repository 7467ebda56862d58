//! The retrieval-only answer: the knowledge base's own words, not a whole
//! passage. A passage is cut into units (its lines, long lines into
//! sentences; headings and document titles never quoted), and units are
//! chosen greedily by the question's words they cover that the chosen ones do
//! not yet (so a question about two things gets both facts), within a
//! character budget, in the passage's order.

/// How long a retrieval-only answer may be: a fact or two, not a document.
pub const REPLY_CHARS: usize = 350;

/// Words that say nothing about what is asked.
const STOPWORDS: &[&str] = &[
    "что",
    "как",
    "это",
    "есть",
    "или",
    "для",
    "все",
    "вас",
    "вам",
    "ваш",
    "ваши",
    "мне",
    "можно",
    "пожалуйста",
    "сколько",
    "стоит",
    "через",
    "когда",
    "нужно",
    "где",
    "там",
    "здесь",
    "скажите",
    "подскажите",
    "какая",
    "какой",
    "какие",
    "the",
    "and",
    "you",
    "are",
    "have",
    "what",
    "how",
    "can",
    "please",
    "your",
    "does",
    "is",
    "do",
    "қанша",
    "бар",
    "ма",
    "ме",
    "ба",
    "бе",
];

/// Lower-case, ё as е: the spelling customers and documents mix.
fn normalize(word: &str) -> String {
    word.to_lowercase().replace('ё', "е")
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(normalize)
        .collect()
}

/// The part of a word inflection leaves alone: its first five letters
/// ("находитесь", "находимся" → "наход"; "оплатить", "оплата" → "оплат").
fn stem(word: &str) -> String {
    word.chars().take(5).collect()
}

/// The question's words worth matching: numbers exactly, other words by stem.
fn question_words(question: &str) -> Vec<String> {
    let mut words: Vec<String> = tokens(question)
        .into_iter()
        .filter(|w| {
            w.chars().all(|c| c.is_ascii_digit())
                || (w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()))
        })
        .collect();
    words.sort();
    words.dedup();
    words
}

fn covers(unit: &[String], word: &str) -> bool {
    if word.chars().all(|c| c.is_ascii_digit()) {
        return unit.iter().any(|t| t == word);
    }
    let s = stem(word);
    unit.iter()
        .any(|t| t.starts_with(&s) || (t.chars().count() >= 3 && word.starts_with(&stem(t))))
}

/// A line without its list marker ("- ", "* ", "1. ") and Markdown emphasis.
fn clean(line: &str) -> String {
    let line = line.trim();
    let line = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("• "))
        .unwrap_or(line);
    let line = match line.split_once(". ") {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    };
    line.replace("**", "").replace("__", "")
}

/// Sentences of a line: split after . ! ? followed by a capital letter, except
/// after a short word ("ул. Абая", "г. Алматы").
fn sentences(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let end = matches!(chars[i], '.' | '!' | '?')
            && chars.get(i + 1) == Some(&' ')
            && chars.get(i + 2).is_some_and(|c| c.is_uppercase());
        if !end {
            continue;
        }
        let word_len = chars[start..i]
            .iter()
            .rev()
            .take_while(|c| c.is_alphanumeric())
            .count();
        if word_len > 3 {
            out.push(
                chars[start..=i]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_owned(),
            );
            start = i + 1;
        }
    }
    let rest: String = chars[start..].iter().collect();
    if !rest.trim().is_empty() {
        out.push(rest.trim().to_owned());
    }
    out
}

/// The units of a passage, in order: (line number, text). Headings (the
/// document's title among them) are not quoted.
fn units(passage: &str) -> Vec<(usize, String)> {
    passage
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .flat_map(|(n, l)| sentences(&clean(l)).into_iter().map(move |s| (n, s)))
        .filter(|(_, s)| s.chars().any(char::is_alphanumeric))
        .collect()
}

/// Cuts `text` to `max` characters at a sentence end, else a word, with "…".
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    let cut = head
        .rfind(['.', '!', '?', '\n'])
        .filter(|&i| i > max / 2)
        .map(|i| head[..=i].to_owned());
    cut.unwrap_or_else(|| {
        let at = head.rfind(' ').unwrap_or(head.len());
        format!("{}…", head[..at].trim_end_matches([',', ';', ':', ' ']))
    })
}

/// The reply to `question` from `passages` (best first): their best units,
/// at most `max` characters. Without any word in common, the best passage's
/// first units.
pub fn answer(passages: &[&str], question: &str, max: usize) -> String {
    // (passage, line, text, tokens)
    let all: Vec<(usize, usize, String, Vec<String>)> = passages
        .iter()
        .enumerate()
        .flat_map(|(p, text)| {
            units(text).into_iter().map(move |(line, s)| {
                let t = tokens(&s);
                (p, line, s, t)
            })
        })
        .collect();
    let mut uncovered = question_words(question);
    let mut chosen: Vec<usize> = Vec::new();
    let mut length = 0;
    loop {
        // The first unit comes from the best passage (retrieval ranked it first
        // for a reason); later ones from it for any word still uncovered, from
        // another passage only for two or more (one shared word is how a stray
        // passage gets in).
        let best = all
            .iter()
            .enumerate()
            .filter(|(i, u)| !chosen.contains(i) && (u.0 == 0 || !chosen.is_empty()))
            .map(|(i, u)| (i, u.0, uncovered.iter().filter(|w| covers(&u.3, w)).count()))
            .filter(|&(_, passage, gain)| gain >= if passage == 0 { 1 } else { 2 })
            .map(|(i, _, gain)| (i, gain))
            // The most new words; among equals the earlier passage and unit.
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((i, _)) = best else { break };
        let size = all[i].2.chars().count() + 1;
        if !chosen.is_empty() && length + size > max {
            break;
        }
        length += size;
        uncovered.retain(|w| !covers(&all[i].3, w));
        chosen.push(i);
    }
    if chosen.is_empty() {
        // Similar in meaning, no word of the best passage in common (another
        // language, other words): its opening.
        for (i, u) in all.iter().enumerate().filter(|(_, u)| u.0 == 0) {
            let size = u.2.chars().count() + 1;
            if !chosen.is_empty() && length + size > max {
                break;
            }
            length += size;
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    let mut reply = String::new();
    let mut previous: Option<(usize, usize)> = None;
    for i in chosen {
        let (p, line, text, _) = &all[i];
        if let Some(prev) = previous {
            // Sentences of one line stay a paragraph; lines stay lines.
            reply.push(if prev == (*p, *line) { ' ' } else { '\n' });
        }
        reply.push_str(text);
        previous = Some((*p, *line));
    }
    shorten(&reply, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICES: &str = "# Цены «Цветы Алматы»\n\n## Букеты из роз\n- Букет из 15 красных роз — 18 000 ₸\n- Букет из 25 роз — 27 000 ₸\n- Букет из 51 розы — 52 000 ₸\n";
    const SHOP: &str = "# Цветы Алматы\n\n## Адрес и часы\nМы находимся на ул. Абая, 10. Работаем ежедневно с 8:00 до 22:00.\n\n## Оплата\nПринимаем **Kaspi Pay**, наличные и карты.\n";

    #[test]
    fn the_asked_row_not_the_whole_section_and_no_heading() {
        let reply = answer(&[PRICES], "Сколько стоит букет из 25 роз?", 350);
        assert_eq!(reply, "Букет из 25 роз — 27 000 ₸");
    }

    #[test]
    fn two_things_asked_two_facts_given() {
        let reply = answer(
            &[SHOP, PRICES],
            "Где вы находитесь и как оплатить через Kaspi?",
            350,
        );
        assert!(reply.contains("ул. Абая, 10"), "{reply}");
        assert!(
            reply.contains("Kaspi Pay") && !reply.contains("**"),
            "{reply}"
        );
        assert!(
            !reply.contains('#') && !reply.contains("Цветы Алматы"),
            "{reply}"
        );
        let both = answer(&[SHOP], "Адрес и до скольки работаете?", 350);
        assert!(both.contains("Абая") && both.contains("22:00"), "{both}");
    }

    #[test]
    fn without_common_words_the_best_passage_opens_within_the_budget() {
        let reply = answer(&[SHOP], "Когда к вам можно прийти?", 60);
        assert!(
            reply.starts_with("Мы находимся на ул. Абая, 10."),
            "{reply}"
        );
        assert!(reply.chars().count() <= 60, "{reply}");
        assert!(!reply.contains('#'));
    }

    #[test]
    fn long_text_is_cut_at_a_sentence_or_a_word() {
        let long = format!(
            "## Уход\n{}",
            "Меняйте воду в вазе каждый день и подрезайте стебли. ".repeat(20)
        );
        let reply = answer(&[&long], "Как ухаживать за букетом, менять воду?", 120);
        assert!(reply.chars().count() <= 120, "{reply}");
        assert!(reply.ends_with('.') || reply.ends_with('…'), "{reply}");
        assert_eq!(shorten("один два три четыре", 9), "один два…");
    }

    #[test]
    fn a_stray_passage_does_not_get_in_on_one_shared_word() {
        let subscription =
            "## Подписка на цветы\nСвежий букет каждую неделю: 4 букета в месяц за 60 000 ₸.";
        let returns =
            "## Returns (English)\nIf the flowers arrive damaged, send a photo within 2 hours.";
        let reply = answer(
            &[subscription, returns],
            "Is there a flower subscription?",
            350,
        );
        assert_eq!(
            reply,
            "Свежий букет каждую неделю: 4 букета в месяц за 60 000 ₸."
        );
    }

    #[test]
    fn spelling_and_inflection_match() {
        let stock = "## Наличие\n- Тюльпаны (поштучно) — 600 ₸, есть\n- Пионы — под заказ за 2 дня";
        assert_eq!(
            answer(&[stock], "тюльпан есть?", 350),
            "Тюльпаны (поштучно) — 600 ₸, есть"
        );
        assert_eq!(
            answer(&["Ёлки — 5 000 ₸"], "елки почем", 350),
            "Ёлки — 5 000 ₸"
        );
    }
}
