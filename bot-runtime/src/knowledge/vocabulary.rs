//! The business's own words, which a customer's misspelt, clipped or
//! transliterated words are read as before a question is looked up:
//! «брекиты» → «брекеты», «имплан» → «имплант», «каспи» → «kaspi». Each
//! indexed document's words are kept in `documents.words`; the vocabulary is
//! their union, loaded after every sync.

use std::collections::{HashMap, HashSet};

use super::lexical::Lexical;

/// Words shorter than this are left alone: too many neighbours.
const SHORTEST: usize = 4;

#[derive(Debug, Default)]
pub struct Vocabulary {
    /// word → how many documents have it
    words: HashMap<String, u32>,
    /// the words' stems as the lexical search has them
    stems: HashSet<u32>,
}

/// Lower-case, `ё` as `е`, split on anything but letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('ё', "е"))
        .collect()
}

/// A document's distinct words, for `documents.words`.
pub fn document_words(text: &str) -> Vec<String> {
    let mut w: Vec<String> = words(text)
        .into_iter()
        // Codes with digits ("скидка5", "r18") are no spelling to read a
        // customer's word as.
        // Three letters and more: "шин" and "роз" are the documents' words
        // too (for `knows`); a correction still reads no word that short.
        .filter(|w| w.chars().count() >= 3 && !w.chars().any(|c| c.is_ascii_digit()))
        .collect();
    w.sort();
    w.dedup();
    w
}

impl Vocabulary {
    pub fn new(words: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            words: words.into_iter().collect(),
            stems: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The text with each word the documents do not have replaced by the
    /// documents' word it most likely is; other characters kept.
    pub fn correct(&self, text: &str) -> String {
        if self.words.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            match self.nearest(word) {
                Some(w) => out.push_str(w),
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

    /// The same words as the lexical search's stems (token ids): a
    /// question's word is known when its stem is one of them.
    pub fn with_stems(mut self, lexical: &Lexical) -> Self {
        self.stems = self
            .words
            .keys()
            .flat_map(|w| lexical.query(w).indices)
            .collect();
        self
    }

    /// Whether the documents have `word` in some form: its stem(s) as the
    /// lexical search makes them (`ids`, from [`Lexical::query`]), or its
    /// first four letters (the stemmer keeps «хранение» and "храните"
    /// apart). Loose on purpose: a word wrongly called unknown costs an
    /// answer. `None` when that is not judged: a stop word (no ids), or no
    /// vocabulary loaded yet.
    pub fn knows(&self, word: &str, ids: &[u32]) -> Option<bool> {
        if self.stems.is_empty() || ids.is_empty() {
            return None;
        }
        let lower = word.to_lowercase().replace('ё', "е");
        let prefix: String = lower.chars().take(4).collect();
        Some(
            ids.iter().all(|id| self.stems.contains(id))
                || self.words.keys().any(|known| known.starts_with(&prefix)),
        )
    }

    /// A word of the documents with the same first five letters.
    fn has_form(&self, lower: &str) -> bool {
        let stem: String = lower.chars().take(5).collect();
        self.words.keys().any(|known| known.starts_with(&stem))
    }

    /// The documents' word `word` stands for, if it is not one of theirs nor
    /// another form of one: the word clipped by up to three letters, one typo
    /// away (from six letters; two from nine), or the same word in Latin
    /// letters. Closest first, then the
    /// commonest, then alphabetical (the same answer every time).
    fn nearest(&self, word: &str) -> Option<&str> {
        let lower = word.to_lowercase().replace('ё', "е");
        let length = lower.chars().count();
        if length < SHORTEST
            || lower.chars().any(|c| c.is_ascii_digit())
            || self.words.contains_key(&lower)
        {
            return None;
        }
        // Clipped ("имплан" for «имплант»): the shortest, commonest whole.
        let clipped = self
            .words
            .iter()
            .filter(|(known, _)| known.starts_with(&lower) && known.chars().count() <= length + 3)
            .min_by(|a, b| {
                a.0.chars()
                    .count()
                    .cmp(&b.0.chars().count())
                    .then(b.1.cmp(a.1))
                    .then(a.0.cmp(b.0))
            });
        if let Some((known, _)) = clipped {
            return Some(known);
        }
        // Another form of a word the documents have ("работаете" and
        // «работаем», "delivery" and «deliver»): the stemmer and the model
        // read it already; a question word must stay as the customer wrote it.
        if self.has_form(&lower) {
            return None;
        }
        let latin = latin(&lower);
        // Typos only in longer words: a short one is one letter from
        // another word ("какой", "такой").
        let allowed = match length {
            ..6 => 0,
            6..9 => 1,
            _ => 2,
        };
        self.words
            .iter()
            .filter_map(|(known, count)| {
                let typo = strsim::damerau_levenshtein(&lower, known);
                let translit = latin
                    .as_deref()
                    .map_or(usize::MAX, |l| strsim::damerau_levenshtein(l, known));
                let distance = typo.min(translit);
                (distance <= allowed).then_some((distance, *count, known.as_str()))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)))
            .map(|(_, _, w)| w)
    }
}

/// A Cyrillic word in Latin letters as brand names are written («каспи» →
/// «kaspi», «тойота» → «toyota»); `None` for a word with other letters. (A
/// whole-Unicode transliteration crate, deunicode, was not taken: its tables
/// are far larger than these 42 letters.)
fn latin(word: &str) -> Option<String> {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        let l = match c {
            'а' | 'ә' => "a",
            'б' => "b",
            'в' => "v",
            'г' | 'ғ' => "g",
            'д' => "d",
            'е' | 'э' => "e",
            'ж' => "zh",
            'з' => "z",
            'и' | 'і' => "i",
            'й' => "y",
            'к' | 'қ' => "k",
            'л' => "l",
            'м' => "m",
            'н' | 'ң' => "n",
            'о' | 'ө' => "o",
            'п' => "p",
            'р' => "r",
            'с' => "s",
            'т' => "t",
            'у' | 'ұ' | 'ү' => "u",
            'ф' => "f",
            'х' | 'һ' => "h",
            'ц' => "ts",
            'ч' => "ch",
            'ш' => "sh",
            'щ' => "sch",
            'ъ' | 'ь' => "",
            'ы' => "y",
            'ю' => "yu",
            'я' => "ya",
            _ => return None,
        };
        out.push_str(l);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clinic() -> Vocabulary {
        let text = "Брекеты металлические — 250 000 ₸. Имплант Osstem (Корея) под ключ. \
                    Принимаем Kaspi QR. Ремонт Toyota, Hyundai. Удаление зуба. Ещё чистка.";
        Vocabulary::new(document_words(text).into_iter().map(|w| (w, 1)))
    }

    #[test]
    fn a_customers_word_is_read_as_the_documents_word() {
        let v = clinic();
        assert_eq!(v.correct("брекиты цена"), "брекеты цена");
        assert_eq!(v.correct("имплан скока стоит"), "имплант скока стоит");
        assert_eq!(v.correct("каспи есть?"), "kaspi есть?");
        assert_eq!(v.correct("тойоту делаете?"), "toyota делаете?");
        assert_eq!(v.correct("Чистка, ещё?"), "Чистка, ещё?");
        // Other forms of the documents' words stay as written.
        assert_eq!(v.correct("ремонтируете брекетов"), "ремонтируете брекетов");
    }

    #[test]
    fn the_business_knows_its_words_in_any_form() {
        let lexical = Lexical::new(10).expect("bm25");
        let v = clinic().with_stems(&lexical);
        let knows = |w: &str| v.knows(w, &lexical.query(w).indices);
        for word in ["брекетов", "Удалением", "kaspi", "чистку", "удалить"]
        {
            assert_eq!(knows(word), Some(true), "{word}");
        }
        assert_eq!(knows("шашлык"), Some(false));
        assert_eq!(knows("сериал"), Some(false));
        // Not judged: stop words, a vocabulary not loaded yet.
        assert_eq!(knows("где"), None);
        assert_eq!(knows("сейчас"), None);
        assert_eq!(
            clinic().knows("шашлык", &lexical.query("шашлык").indices),
            None
        );
    }

    #[test]
    fn short_words_numbers_and_strangers_are_left_alone() {
        let v = clinic();
        // Short words have too many neighbours; numbers are exact.
        assert_eq!(v.correct("зуп 250001 ключи"), "зуп 250001 ключи");
        // Nothing near: kept as written.
        assert_eq!(v.correct("погода завтра"), "погода завтра");
        assert_eq!(Vocabulary::default().correct("брекиты"), "брекиты");
        assert_eq!(
            document_words("Ёлка, ёлка и 2024, код СКИДКА5"),
            ["елка".to_owned(), "код".to_owned()]
        );
    }
}
