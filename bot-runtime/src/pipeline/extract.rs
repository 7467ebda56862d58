//! The retrieval-only answer: the knowledge base's own words, not a whole
//! passage. A passage is cut into units (its lines, long lines into
//! sentences; headings and document titles never quoted), and units are
//! chosen greedily by the question's words they cover that the chosen ones do
//! not yet (so a question about two things gets both facts), within a
//! character budget, in the passage's order. What the question asks for (a
//! price, opening hours, an address, a phone, a duration) counts too: a unit
//! holding a price answers "сколько стоит" better than one that only shares
//! its words.

/// How long a retrieval-only answer may be: a fact or two, not a document.
pub const REPLY_CHARS: usize = 350;

use super::wants::{Want, cue_word, holds, wants};
use super::words::{covers, normalize, question_words, tokens};
use crate::decide::detect_language;

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

/// The units of a passage, in order: (line number, text, the heading above
/// it). Headings (the document's title among them) are not quoted, but a
/// unit is matched with its heading's words too: "Ежедневно с 9:00 до 21:00"
/// answers "до скольки работаете" because it stands under "Часы работы".
fn units(passage: &str) -> Vec<(usize, String, String)> {
    let mut heading = String::new();
    let mut out = Vec::new();
    for (n, line) in passage.lines().enumerate() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix('#') {
            heading = h.trim_start_matches('#').trim().to_owned();
            continue;
        }
        if line.is_empty() {
            continue;
        }
        for s in sentences(&clean(line)) {
            if s.chars().any(char::is_alphanumeric) {
                out.push((n, s, heading.clone()));
            }
        }
    }
    out
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

/// Parts of a question joined by "и", "and", "және" or a comma-"а": each
/// may want a fact of its own from another passage.
fn parts(question: &str) -> usize {
    let q = format!(" {} ", normalize(question));
    1 + [" и ", " and ", " және ", ", а ", " а также "]
        .iter()
        .map(|c| q.matches(c).count())
        .sum::<usize>()
}

/// How much of the question a passage holds in words: the question's words
/// it covers (headings included) and two for each kind of fact asked for
/// that it holds.
fn lexical(passage: &str, words: &[String], wanted: &[Want]) -> usize {
    let units = units(passage);
    let mut t: Vec<String> = Vec::new();
    for (_, s, heading) in &units {
        t.extend(tokens(s));
        t.extend(tokens(heading));
    }
    words.iter().filter(|w| covers(&t, w)).count()
        + 2 * wanted
            .iter()
            .filter(|w| units.iter().any(|(_, s, _)| holds(s, **w)))
            .count()
}

/// The passages (best first by similarity) in the order of what they hold
/// of the question in words (`lexical`), the most similar one given a point
/// more, ties in the similarity order: a price list the embedding put fourth
/// comes first for "Сколько стоит чистка?" when it holds the words and a
/// price. (Reciprocal rank fusion was tried: it lets the first by similarity
/// win whenever it is second by words.) A re-ranking of the retrieved
/// candidates, not a lexical search of the whole knowledge base.
pub fn rerank(passages: &[&str], question: &str) -> Vec<usize> {
    let words = question_words(question);
    let wanted = wants(question);
    let mut scored: Vec<(usize, usize)> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| (i, lexical(p, &words, &wanted) + usize::from(i == 0)))
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, _)| i).collect()
}

/// Whether a passage is lexically about what was asked: it shares a word
/// (not a number) with the question, its headings included, or the question
/// has no words but those asking for a kind of fact ("Где вы находитесь?")
/// and a passage holds one.
pub fn grounded(passages: &[&str], question: &str) -> bool {
    let wanted = wants(question);
    let words: Vec<String> = question_words(question)
        .into_iter()
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let only_cues = !wanted.is_empty() && words.iter().all(|w| cue_word(w, &wanted));
    passages.iter().any(|p| {
        units(p).iter().any(|(_, s, heading)| {
            let mut t = tokens(s);
            t.extend(tokens(heading));
            words.iter().any(|w| covers(&t, w))
                || (only_cues && wanted.iter().any(|w| holds(s, *w)))
        })
    })
}

/// Whether a retrieval-only reply quotes the passages found. Not when the
/// business's documents have none of the question's words (`known`: two or
/// more judged, stop words and the asking ones aside), in any language: it
/// is about something else ("Напиши стих про весну"), however near a
/// passage's meaning. Near the floor (not `sure`), not when they lack most of
/// them, two or more: one shared word is how a stray passage gets in
/// ("Посоветуй хорошее кафе рядом" and «Рядом бесплатная парковка»). One
/// unknown word is never enough ("Вы сегодня работаете?"). Else when a
/// passage is `grounded` in the question, or across languages, where only
/// meaning can match, when the best is `sure`: a fact in the question's own
/// language that shares no word with it is about something else
/// ("Посоветуй, какую квартиру снять" and a car's place in a box).
pub fn quotes(grounded: bool, sure: bool, same_language: bool, known: &[bool]) -> bool {
    let unknown = known.iter().filter(|k| !**k).count();
    let foreign = unknown >= 2 && (unknown == known.len() || (!sure && unknown * 2 > known.len()));
    !foreign && (grounded || (sure && !same_language))
}

/// A sentence or row a reply may quote.
struct Unit {
    /// Its passage (the first of its section).
    passage: usize,
    /// Its line, counted across the passages.
    line: usize,
    text: String,
    /// Its words and its headings'.
    tokens: Vec<String>,
    /// In the question's language, or in none (a number, a time).
    native: bool,
}

/// The reply to `question` from `passages` (best first): their best units,
/// at most `max` characters. Without any word in common, the best passage's
/// first units.
pub fn answer(passages: &[&str], question: &str, max: usize) -> String {
    // Facts of one section (the same heading lines above them: the rows of a
    // price list) are one passage here, as the section was before it was cut
    // into facts: its rows may answer together.
    let path = |p: &str| -> Vec<String> {
        p.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let section: Vec<usize> = (0..passages.len())
        .map(|i| {
            let own = path(passages[i]);
            (0..i)
                .find(|&j| !own.is_empty() && path(passages[j]) == own)
                .unwrap_or(i)
        })
        .collect();
    // In the question's language a unit wins over an equal one in another:
    // a Russian question gets the address, not its Kazakh copy.
    let asked = detect_language(question);
    let all: Vec<Unit> = passages
        .iter()
        .enumerate()
        .flat_map(|(p, text)| {
            // Lines numbered across passages: two rows stay two lines.
            let first_line: usize = passages[..p].iter().map(|q| q.lines().count()).sum();
            let p = section[p];
            units(text).into_iter().map(move |(line, text, heading)| {
                let mut words = tokens(&text);
                words.extend(tokens(&heading));
                let native = detect_language(&text).is_none_or(|l| Some(l) == asked);
                Unit {
                    passage: p,
                    line: first_line + line,
                    text,
                    tokens: words,
                    native,
                }
            })
        })
        .collect();
    let mut uncovered = question_words(question);
    let mut unmet = wants(question);
    let several = parts(question) > 1;
    let mut chosen: Vec<usize> = Vec::new();
    let mut length = 0;
    let worth_of = |u: &Unit, words: &[String], wanted: &[Want]| {
        words.iter().filter(|w| covers(&u.tokens, w)).count()
            + if wanted.iter().any(|w| holds(&u.text, *w)) {
                2
            } else {
                0
            }
    };
    let (question_words_all, wanted_all) = (uncovered.clone(), unmet.clone());
    loop {
        // A unit's worth: the question's words it covers that the chosen
        // ones do not, and two more for a kind of fact still wanted. From
        // the best passage any worth will do (retrieval ranked it first for
        // a reason); from another, the first unit only when it holds the
        // fact wanted, later ones with two or more (one shared word is how a
        // stray passage gets in), and a wanted fact without a shared word
        // only when the question asks several things.
        let best = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !chosen.contains(i))
            .filter_map(|(i, u)| {
                let gain = uncovered.iter().filter(|w| covers(&u.tokens, w)).count();
                let wanted = unmet.iter().any(|w| holds(&u.text, *w));
                let worth = gain + if wanted { 2 } else { 0 };
                let enough = match (u.passage, gain) {
                    (0, _) => worth >= 1,
                    // The first unit from another passage only with the fact wanted.
                    _ if chosen.is_empty() => wanted && gain >= 1,
                    (_, 0) => several && wanted,
                    _ => worth >= 2,
                };
                enough.then_some((i, (worth, u.native)))
            })
            // The most worth; among equals the one in the question's
            // language, then the earlier passage and unit.
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((i, _)) = best else { break };
        let size = all[i].text.chars().count() + 1;
        if !chosen.is_empty() && length + size > max {
            break;
        }
        length += size;
        uncovered.retain(|w| !covers(&all[i].tokens, w));
        unmet.retain(|w| !holds(&all[i].text, *w));
        chosen.push(i);
    }
    // Rows as good as the first ("масло поменять": the oil change with and
    // without a filter) are part of the answer, up to three in all.
    if let Some(&first) = chosen.first() {
        let top = worth_of(&all[first], &question_words_all, &wanted_all);
        let ties: Vec<usize> = (0..all.len())
            .filter(|i| !chosen.contains(i))
            .filter(|&i| {
                question_words_all.iter().any(|w| covers(&all[i].tokens, w))
                    && worth_of(&all[i], &question_words_all, &wanted_all) == top
            })
            .collect();
        for i in ties {
            let size = all[i].text.chars().count() + 1;
            if chosen.len() >= 3 || length + size > max {
                break;
            }
            length += size;
            chosen.push(i);
        }
    }
    if chosen.is_empty() {
        // No word in common anywhere, but the question asks for a kind of
        // fact ("Где вы?"): the first unit holding each kind, best passage
        // first, one in the question's language before others.
        for want in &unmet {
            let holding = |i: &usize| !chosen.contains(i) && holds(&all[*i].text, *want);
            let native = (0..all.len()).find(|i| holding(i) && all[*i].native);
            if let Some(i) = native.or_else(|| (0..all.len()).find(holding)) {
                let size = all[i].text.chars().count() + 1;
                if !chosen.is_empty() && length + size > max {
                    break;
                }
                length += size;
                chosen.push(i);
            }
        }
    }
    if chosen.is_empty() {
        // Similar in meaning, no word of the best passage in common (another
        // language, other words): its opening.
        for (i, u) in all.iter().enumerate().filter(|(_, u)| u.passage == 0) {
            let size = u.text.chars().count() + 1;
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
        let u = &all[i];
        if let Some(prev) = previous {
            // Sentences of one line stay a paragraph; lines stay lines.
            reply.push(if prev == (u.passage, u.line) {
                ' '
            } else {
                '\n'
            });
        }
        reply.push_str(&u.text);
        previous = Some((u.passage, u.line));
    }
    shorten(&reply, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_word_in_a_passage_grounds_nothing() {
        let directions = "## Как добраться\nОт остановки «Гелиос» пять минут пешком.";
        assert!(!grounded(&[directions], "Посоветуй, какую квартиру снять"));
        let wisdom = "## Зуб мудрости\nУдаление — 20 000 ₸";
        assert!(grounded(&[wisdom], "удалить зубы мудрости сколько"));
    }

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
    fn a_question_about_nothing_the_business_has_is_not_quoted() {
        // Grounded, or sure across languages: quoted.
        assert!(quotes(true, false, true, &[true, false]));
        assert!(quotes(false, true, false, &[]));
        // Near in meaning, nothing shared, one language: not.
        assert!(!quotes(false, true, true, &[true]));
        // Two or more words, none the business's: not, even grounded or sure.
        assert!(!quotes(true, true, true, &[false, false]));
        assert!(!quotes(false, true, false, &[false, false, false]));
        // Near the floor, most unknown: not; sure of the meaning: quoted.
        assert!(!quotes(true, false, true, &[false, false, true]));
        assert!(quotes(true, true, true, &[false, false, true]));
        // One unknown word alone says nothing; half known is enough.
        assert!(quotes(true, false, true, &[false]));
        assert!(quotes(true, false, true, &[false, false, true, true]));
    }

    #[test]
    fn the_fact_in_the_question_s_language_wins_over_its_copy() {
        let kazakh = "# Автосервис\n## Мекенжай (қазақша)\nҚарағанды қ., Бұқар жырау к-сі 112/3. Күн сайын 9:00–21:00.";
        let russian = "# Автосервис\n## Адрес\nг. Караганда, ул. Бухар-Жырау 112/3, бокс 4.";
        let hours = "# Автосервис\n## Часы работы\nЕжедневно с 9:00 до 21:00.";
        let reply = answer(
            &[kazakh, russian, hours],
            "Где вы находитесь и до скольки работаете?",
            350,
        );
        assert!(reply.contains("ул. Бухар-Жырау"), "{reply}");
        assert!(!reply.contains("Қарағанды"), "{reply}");
    }

    #[test]
    fn rows_of_one_section_answer_together_as_before_it_was_cut() {
        let row = |r: &str| format!("# Цены\n## Шиномонтаж\n- {r}");
        let (balance, r16, storage) = (
            row("Балансировка одного колеса — 1 500 ₸"),
            row("Сезонная переобувка R13–R16 — 12 000 ₸ за комплект"),
            row("Хранение шин — 15 000 ₸ за сезон"),
        );
        let reply = answer(
            &[&balance, &r16, &storage],
            "Сколько переобувка R15 и балансировка одного колеса?",
            350,
        );
        assert_eq!(
            reply,
            "Балансировка одного колеса — 1 500 ₸\nСезонная переобувка R13–R16 — 12 000 ₸ за комплект"
        );
        // A row of another section with one shared word stays out.
        let other = "# Цены\n## Двигатель\n- Замена сцепления одного диска — от 45 000 ₸";
        assert_eq!(
            answer(
                &[&balance, other],
                "Балансировка колеса одного сколько?",
                350
            ),
            "Балансировка одного колеса — 1 500 ₸"
        );
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
    fn the_kind_of_fact_asked_for_wins_over_shared_words() {
        let faq =
            "## Как часто делать чистку?\nПрофессиональную чистку рекомендуем раз в 6 месяцев.";
        let prices = "## Гигиена\n- Профессиональная чистка (ультразвук и Air Flow) — 22 000 ₸\n- Фторирование — 6 000 ₸";
        // The FAQ ranked first, the price list second: the price answers.
        assert_eq!(
            answer(
                &[faq, prices],
                "Сколько стоит профессиональная чистка?",
                350
            ),
            "Профессиональная чистка (ультразвук и Air Flow) — 22 000 ₸"
        );
        let clinic = "## Адрес\nг. Астана, ул. Кенесары 40, 2 этаж.\n\n## Часы работы\nПн–Пт с 9:00 до 20:00.";
        let records = "## Запись\nЗаписаться можно по телефону +7 717 255 40 40.";
        let both = answer(
            &[records, clinic],
            "Где вы находитесь и до скольки работаете?",
            350,
        );
        assert!(
            both.contains("Кенесары 40") && both.contains("9:00 до 20:00"),
            "{both}"
        );
        assert!(!both.contains("+7 717"), "{both}");
        // One thing asked: a price from another passage with no shared word stays out.
        assert_eq!(
            answer(&[records, prices], "Как записаться?", 350),
            "Записаться можно по телефону +7 717 255 40 40."
        );
        assert_eq!(wants("Сколько длится чистка?"), vec![Want::Duration]);
        assert_eq!(parts("Сколько стоит имплант и есть ли рассрочка?"), 2);
    }

    #[test]
    fn a_unit_is_matched_with_its_heading_never_quoted_with_it() {
        let service = "## Скидки\nСкидка 10% на работы пенсионерам.\n\n## Часы работы\nЕжедневно с 9:00 до 21:00.";
        assert_eq!(
            answer(&[service], "Во сколько вы работаете?", 350),
            "Ежедневно с 9:00 до 21:00."
        );
    }

    #[test]
    fn the_price_list_comes_first_for_a_price_question() {
        let faq =
            "## Как часто делать чистку?\nПрофессиональную чистку рекомендуем раз в 6 месяцев.";
        let hours = "## Часы работы\nПн–Пт с 9:00 до 20:00.";
        let care = "## После чистки\n2 часа не ешьте окрашивающие продукты.";
        let prices = "## Гигиена\n- Профессиональная чистка — 22 000 ₸";
        let order = rerank(
            &[faq, hours, care, prices],
            "Сколько стоит профессиональная чистка?",
        );
        assert_eq!(order[0], 3, "{order:?}");
        // Nothing lexical to go by: the similarity order stays.
        assert_eq!(rerank(&[faq, hours, care], "Hello there"), vec![0, 1, 2]);
    }

    #[test]
    fn a_number_alone_is_no_evidence() {
        assert!(!grounded(&[PRICES], "Сколько стоит айфон 15?"));
        assert!(grounded(&[PRICES], "Сколько стоят розы?"));
        assert!(grounded(
            &["## Часы работы\nЕжедневно с 9:00."],
            "до скольки работаете"
        ));
        let address = "## Адрес\nг. Караганда, ул. Бухар-Жырау 112/3.";
        assert!(grounded(&[address], "Где вы находитесь?"));
        assert!(!grounded(&[address], "Где ближайшая аптека?"));
        assert_eq!(wants("Фторирование сколько?"), vec![Want::Price]);
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
