//! The lexical half of retrieval: BM25 sparse vectors from Qdrant's own
//! model (qdrant-edge's `EdgeBm25`: Qdrant's word tokenizer, the Snowball
//! Russian stemmer, Russian, Kazakh and English stop words), computed here
//! for both stores. Each store keeps them as the `bm25` sparse vector with
//! the IDF modifier, so Qdrant weighs a word by how rare it is in this
//! tenant's documents, and fuses the lexical and the dense lists itself.

use anyhow::{Context, Result};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

/// The sparse vector's name in the Edge shard and in the server collection.
pub const VECTOR: &str = "bm25";

/// A sparse vector: token hashes and their weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sparse {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Sparse {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

pub struct Lexical {
    model: EdgeBm25,
}

impl std::fmt::Debug for Lexical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lexical(bm25)")
    }
}

impl Lexical {
    /// `avg_len`: the expected length of a chunk in words (BM25's length
    /// normalisation; our chunks are a price row or a short section, far
    /// below the model's default of 256).
    pub fn new(avg_len: usize) -> Result<Self> {
        let config: EdgeBm25Config = serde_json::from_value(serde_json::json!({
            "avg_len": avg_len.max(1) as f64,
            "language": "russian",
            "stopwords": {"languages": ["russian", "kazakh", "english"]},
        }))
        .context("the BM25 configuration")?;
        Ok(Self {
            model: EdgeBm25::new(config).map_err(|e| anyhow::anyhow!("the BM25 model: {e}"))?,
        })
    }

    pub fn document(&self, text: &str) -> Sparse {
        let v = self.model.embed_document(&normal(text));
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }

    pub fn query(&self, text: &str) -> Sparse {
        let v = self.model.embed_query(&normal(text));
        Sparse {
            indices: v.indices,
            values: v.values,
        }
    }
}

/// What both sides are tokenised from: `ё` read as `е` (customers rarely
/// type it, documents often do), a number's digit groups joined («2 000»,
/// «2000» and «2.000» are one token) and the tenge however written (₸, тг,
/// теңге, KZT) as one word.
pub fn normal(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match word.to_lowercase().as_str() {
            "тг" | "теңге" | "kzt" | "tenge" => out.push_str("тенге"),
            _ => out.push_str(word),
        }
        word.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        // A space or a dot between a digit and exactly three more digits is
        // a thousands separator.
        let separator = matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '.')
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.len() > i + 3
            && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
            && chars.get(i + 4).is_none_or(|n| !n.is_ascii_digit());
        match c {
            _ if separator => {}
            'ё' | 'Ё' => word.push('е'),
            '₸' => {
                flush(&mut word, &mut out);
                out.push_str(" тенге");
            }
            c if c.is_alphanumeric() => word.push(c),
            c => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_yo_and_tenge_are_written_one_way() {
        assert_eq!(normal("Доставка — 2 000 ₸"), "Доставка — 2000  тенге");
        assert_eq!(normal("доставка 2000 тг"), "доставка 2000 тенге");
        assert_eq!(normal("от 30.000 KZT."), "от 30000 тенге.");
        assert_eq!(normal("Ещё пионы"), "Еще пионы");
        // Hours and dates are no thousands: only a group of three digits.
        assert_eq!(normal("с 9.00, 12.2024"), "с 9.00, 12.2024");
    }

    #[test]
    fn a_question_shares_tokens_with_the_row_that_answers_it() {
        let bm25 = Lexical::new(40).expect("the model");
        let row = bm25.document("Удаление зуба простое — 12 000 ₸");
        let question = bm25.query("сколько стоит удалить зуб, 12000 тенге?");
        let shared = question
            .indices
            .iter()
            .filter(|i| row.indices.contains(i))
            .count();
        // «зуб» (stemmed from «зуба»), «12000», «тенге».
        assert!(shared >= 3, "{shared} shared tokens");
        // Stop words in three languages give no tokens.
        assert!(bm25.query("и в на the and мен").is_empty());
        assert!(question.values.iter().all(|v| *v == 1.0));
    }
}
