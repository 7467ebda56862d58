//! What a question asks for: a kind of fact (a price, opening hours, an
//! address, a phone, a duration), by its words, and how a line of a
//! document shows it holds one. The retrieval-only answer weighs units by
//! it; the lexical search is given the words such a row says.

use super::words::{normalize, question_words, stem, tokens};

/// Kinds of fact a question asks for, by its words, and how a unit shows it
/// holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    Price,
    Hours,
    Address,
    Phone,
    Duration,
}

const WANTS: &[(Want, &[&str])] = &[
    (
        Want::Price,
        &[
            "сколько стоит",
            "сколько стоят",
            "стоимост",
            "цена",
            "цену",
            "цен ",
            "почем",
            "прайс",
            "платн",
            "сколько будет стоить",
            "сколько выйдет",
            "баға",
            "қанша тұрады",
            "how much",
            "price",
            "cost",
        ],
    ),
    (
        Want::Hours,
        &[
            "во сколько",
            "до скольки",
            "работаете",
            "работает",
            "открыт",
            "часы работы",
            "график",
            "выходн",
            "воскресень",
            "суббот",
            "жұмыс істей",
            "қашан жұмыс",
            "қашан ашық",
            "ашықсыз",
            "opening hours",
            "open",
        ],
    ),
    (
        Want::Address,
        &[
            "где ",
            "где?",
            "адрес",
            "находит",
            "куда подъехать",
            "как вас найти",
            "қайда",
            "қай жерде",
            "қайда орналас",
            "мекенжай",
            "where",
            "address",
            "located",
        ],
    ),
    (
        Want::Phone,
        &["как записаться", "телефон", "позвонить", "номер для записи"],
    ),
    (
        Want::Duration,
        &[
            "сколько длится",
            "сколько времени",
            "как долго",
            "по времени",
            "за сколько часов",
            "сколько ждать",
            "how long",
        ],
    ),
];

/// What the question asks for (its words, lower-case, ё as е, with a space
/// after so "где" at the end matches "где ").
pub(super) fn wants(question: &str) -> Vec<Want> {
    let q = format!("{} ", normalize(question));
    let found: Vec<Want> = WANTS
        .iter()
        .filter(|(_, cues)| cues.iter().any(|c| q.contains(c)))
        .map(|(w, _)| *w)
        .collect();
    // "Фторирование сколько?": a bare "how much" in a shop's chat is a price.
    if found.is_empty()
        && ["сколько", "қанша", "how much"]
            .iter()
            .any(|c| q.contains(c))
    {
        return vec![Want::Price];
    }
    found
}

/// Words a customer names the business itself by ("Где находится
/// клиника?" asks where the business is, nothing else).
const THE_BUSINESS: &[&str] = &[
    "клиник",
    "магазин",
    "сервис",
    "салон",
    "офис",
    "студи",
    "дүкен",
    "клиника",
    "shop",
    "clinic",
];

/// A word of the question that only says what kind of fact is wanted
/// ("находитесь" in "Где вы находитесь?"), or names the business.
pub(super) fn cue_word(word: &str, wants: &[Want]) -> bool {
    THE_BUSINESS.iter().any(|b| word.starts_with(b))
        || WANTS
            .iter()
            .filter(|(w, _)| wants.contains(w))
            .flat_map(|(_, cues)| cues.iter().flat_map(|c| tokens(c)))
            .any(|cue| word.starts_with(&cue) || cue.starts_with(&stem(word)))
}

/// The question's words that say what it is about: not numbers, not the
/// words asking for a kind of fact, not the business's name for itself
/// ("Сколько стоит шашлык?" is about "шашлык").
pub(super) fn topic_words(question: &str) -> Vec<String> {
    let wanted = wants(question);
    question_words(question)
        .into_iter()
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()) && !cue_word(w, &wanted))
        .collect()
}

/// Words a row holding the kind of fact asked for says, for the lexical
/// search: "Где находится клиника?" should find the row with «ул.», not the
/// one with «клиника».
pub fn hint(question: &str) -> String {
    // A Kazakh question is best answered by the Kazakh part of a document.
    let kazakh = question.chars().any(|c| "әғқңөұүһіӘҒҚҢӨҰҮҺІ".contains(c));
    wants(question)
        .into_iter()
        .map(|w| match (w, kazakh) {
            (Want::Price, _) => "тенге",
            (Want::Hours, false) => "ежедневно выходных",
            (Want::Hours, true) => "күн сайын",
            (Want::Address, false) => "ул улица проспект этаж",
            (Want::Address, true) => "көшесі сі қабат",
            (Want::Phone, _) => "телефон whatsapp",
            (Want::Duration, _) => "минут",
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a unit holds a fact of the kind.
pub(super) fn holds(unit: &str, want: Want) -> bool {
    let lower = normalize(unit);
    let digits = unit.chars().filter(char::is_ascii_digit).count();
    match want {
        Want::Price => {
            (digits > 0
                && ["₸", "тенге", "тг", "$", "руб"]
                    .iter()
                    .any(|c| lower.contains(c)))
                || ["бесплатн", "тегін", "free of charge"]
                    .iter()
                    .any(|c| lower.contains(c))
        }
        Want::Hours => {
            let chars: Vec<char> = unit.chars().collect();
            chars
                .windows(3)
                .any(|w| w[0].is_ascii_digit() && w[1] == ':' && w[2].is_ascii_digit())
                || ["ежедневно", "без выходных", "выходной", "күн сайын"]
                    .iter()
                    .any(|c| lower.contains(c))
        }
        Want::Address => [
            "ул.",
            "пр.",
            "г. ",
            "улиц",
            "проспект",
            "к-сі",
            "бокс",
            "этаж",
            "бц ",
            "тц ",
            "қабат",
            "напротив",
        ]
        .iter()
        .any(|c| lower.contains(c)),
        Want::Phone => unit.contains('+') && digits >= 10,
        Want::Duration => {
            digits > 0
                && [
                    "минут",
                    "час",
                    "дн",
                    "недел",
                    "месяц",
                    "сағат",
                    "minute",
                    "hour",
                    "day",
                ]
                .iter()
                .any(|c| lower.contains(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lexical_hint_names_what_a_row_of_the_asked_kind_says() {
        assert_eq!(hint("Где находится клиника?"), "ул улица проспект этаж");
        assert_eq!(hint("Клиника қайда орналасқан?"), "көшесі сі қабат");
        assert_eq!(hint("Сколько стоит чистка?"), "тенге");
        assert_eq!(hint("Привет"), "");
        assert_eq!(hint("Клиника қай жерде?"), "көшесі сі қабат");
        assert_eq!(hint("Сервис қашан ашық?"), "күн сайын");
    }

    #[test]
    fn a_questions_topic_is_its_words_but_the_asking_ones() {
        assert_eq!(
            topic_words("Сколько стоит шашлык в Караганде?"),
            ["караганде", "шашлык"]
        );
        assert_eq!(topic_words("Где находится клиника?"), Vec::<String>::new());
        assert_eq!(
            topic_words("Напиши стих про весну"),
            ["весну", "напиши", "стих"]
        );
    }
}
