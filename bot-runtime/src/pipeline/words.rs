//! A question's and a passage's words as the retrieval-only answer matches
//! them: lower-case, ё as е, stop words of three languages left out, words
//! compared by their first letters (inflection changes the end), numbers
//! exactly.

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
    "про",
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
    "какую",
    "какое",
    "каким",
    "каких",
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
    "сіз",
    "сіздер",
    "сіздің",
    "бар",
    "ма",
    "ме",
    "ба",
    "бе",
];

/// Lower-case, ё as е: the spelling customers and documents mix.
pub(super) fn normalize(word: &str) -> String {
    word.to_lowercase().replace('ё', "е")
}

pub(super) fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(normalize)
        .collect()
}

/// The part of a word inflection leaves alone: its first five letters
/// ("находитесь", "находимся" → "наход"; "оплатить", "оплата" → "оплат").
pub(super) fn stem(word: &str) -> String {
    // A five-letter word keeps four ("масло", "масла" → "масл").
    let n = word.chars().count();
    word.chars().take(n.saturating_sub(1).clamp(4, 5)).collect()
}

/// The question's words worth matching: numbers exactly, other words by stem.
pub(super) fn question_words(question: &str) -> Vec<String> {
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

pub(super) fn covers(unit: &[String], word: &str) -> bool {
    if word.chars().all(|c| c.is_ascii_digit()) {
        return unit.iter().any(|t| t == word);
    }
    let s = stem(word);
    // A short word of the unit covers the question's longer forms of it
    // ("зуб" covers "зубы"), unless it is a word that says nothing ("как"
    // would cover "какую").
    unit.iter().any(|t| {
        t.starts_with(&s)
            || (t.chars().count() >= 3
                && !STOPWORDS.contains(&t.as_str())
                && word.starts_with(&stem(t)))
    })
}
