//! A customer's question in the words the documents use: colloquial and
//! misspelt forms of common question words, replaced before the question is
//! embedded and before the reply's sentences are chosen. The business's own
//! vocabulary (service and product names) is matched by the embedding model
//! and by word stems, not here.

/// (the colloquial or misspelt word, what a document would say)
const COLLOQUIAL: &[(&str, &str)] = &[
    ("скок", "сколько"),
    ("скока", "сколько"),
    ("скоко", "сколько"),
    ("сколька", "сколько"),
    ("скольк", "сколько"),
    ("скоька", "сколько"),
    ("почем", "сколько стоит"),
    ("почём", "сколько стоит"),
    ("пачем", "сколько стоит"),
    ("пачём", "сколько стоит"),
    ("щас", "сейчас"),
    ("щя", "сейчас"),
    ("можна", "можно"),
    ("чё", "что"),
    ("чо", "что"),
    ("че", "что"),
    ("адресс", "адрес"),
    ("адрис", "адрес"),
    ("кондей", "кондиционер"),
    ("кондея", "кондиционера"),
    ("инфа", "информация"),
    ("ваще", "вообще"),
    ("седня", "сегодня"),
    ("сёдня", "сегодня"),
    ("завтро", "завтра"),
];

/// The text with each colloquial word (whole words, any case) replaced.
pub fn standard(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let lower = word.to_lowercase();
        match COLLOQUIAL.iter().find(|(from, _)| *from == lower) {
            Some((_, to)) => out.push_str(to),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colloquial_words_become_the_documents_words() {
        assert_eq!(super::standard("скок стоит 25 роз"), "сколько стоит 25 роз");
        assert_eq!(
            super::standard("Тюльпаны почём? Щас открыты?"),
            "Тюльпаны сколько стоит? сейчас открыты?"
        );
        assert_eq!(super::standard("адресс магазина"), "адрес магазина");
        // Whole words only: "чехол" keeps its "че".
        assert_eq!(super::standard("чехол на руль"), "чехол на руль");
        assert_eq!(super::standard(""), "");
    }
}
