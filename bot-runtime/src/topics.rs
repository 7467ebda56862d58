//! Handover topics (`handover.topics`): subjects a business wants a human
//! for — a payment that went wrong, moving or cancelling a booking, health
//! questions, complaints, the state of one's own order. Each topic is matched
//! by word stems (precise, here) and by example phrases (semantically, in
//! `semantic`); the LLM classifier is given the descriptions instead.

use truffles_crds::client::HandoverTopic;

/// A topic as the runtime matches it: the tenant's entry merged with the
/// built-in definition of the same name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub description: String,
    pub examples: Vec<String>,
    pub stems: Vec<String>,
}

struct BuiltIn {
    name: &'static str,
    description: &'static str,
    /// Forms that say the thing, not words that merely touch it: "оплатил"
    /// (a payment made) but not "оплатить" (how to pay, answered from the
    /// documents); "отмените" but not "отменить" in "за сколько можно
    /// отменить" (the rule, also in the documents).
    stems: &'static [&'static str],
    examples: &'static [&'static str],
}

const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        name: "booking_change",
        description: "moving, cancelling or changing the customer's own booking, appointment or order",
        stems: &[
            "перенесите",
            "хочу перенес",
            "нужно перенес",
            "надо перенес",
            "можно перенес",
            "отмените",
            "хочу отмен",
            "нужно отмен",
            "надо отмен",
            "хочу поменять",
            "изменить заказ",
            "изменить запись",
            "не смогу прийти",
            "не смогу приехать",
            "басқа күнге",
            "басқа уақытқа",
            "reschedul",
            "cancel my",
            "to cancel",
            "change my booking",
            "change my order",
        ],
        examples: &[
            "Хочу перенести запись на другой день",
            "Отмените, пожалуйста, мой заказ",
            "Не успеваю, можно сдвинуть время на вечер?",
            "Поменяйте дату доставки",
            "Жазылуымды басқа күнге ауыстырыңызшы",
            "I need to move my appointment to Friday",
        ],
    },
    BuiltIn {
        name: "payment",
        description: "a problem with a payment already made: charged twice, no receipt or confirmation, a failed payment or instalment, getting a prepayment back",
        stems: &[
            "оплатил",
            "оплатила",
            "оплатили",
            "списали",
            "списалось",
            "оплата не",
            "платеж не",
            "платёж не",
            "не прошла оплат",
            "не одобр",
            "вернуть предоплат",
            "верните предоплат",
            "вернуть деньги",
            "төледім",
            "i paid",
            "charged twice",
            "was charged",
            "payment failed",
        ],
        examples: &[
            "Я перевела деньги, а подтверждения нет",
            "С меня сняли оплату дважды",
            "Платёж по карте не проходит",
            "Верните мою предоплату",
            "Ақша төледім, бірақ чек келмеді",
            "I was charged but got no receipt",
        ],
    },
    BuiltIn {
        name: "medical",
        description: "the customer's health: contraindications, allergies, pregnancy, chronic illness, medicines, symptoms after a procedure",
        stems: &[
            "аллерг",
            "беремен",
            "диабет",
            "противопоказ",
            "гипертон",
            "давлени",
            "разжиж",
            "антикоагул",
            "температур",
            "кровотеч",
            "идет кровь",
            "идёт кровь",
            "опух",
            "отек",
            "отёк",
            "гной",
            "жүкті",
            "allerg",
            "pregnan",
            "diabet",
            "bleeding",
            "swelling",
        ],
        examples: &[
            "У меня аллергия на лекарства, можно ли мне процедуру?",
            "Я на таблетках от давления, это противопоказание?",
            "После процедуры болит и опухло, что делать?",
            "Можно ли это при беременности?",
            "Менде аллергия бар, болады ма?",
            "I have a heart condition, is the treatment safe for me?",
        ],
    },
    BuiltIn {
        name: "complaint",
        description: "dissatisfaction with a product, service or staff: rudeness, damage, lateness, poor work, wanting money back",
        stems: &[
            "нагруб",
            "груб",
            "поцарап",
            "опоздал",
            "не такой, как",
            "не такой как",
            "сделали плохо",
            "плохо сделали",
            "выпала",
            "сломали",
            "unacceptable",
            "worse",
            "rude",
        ],
        examples: &[
            "Ваш сотрудник мне нахамил",
            "Мне испортили вещь, кто за это ответит?",
            "Работу сделали некачественно, я недоволен",
            "Привезли совсем не то, что я заказывал",
            "Қызмет көрсету нашар болды",
            "Your staff was rude to me",
        ],
    },
    BuiltIn {
        name: "order_status",
        description: "the state of the customer's own order, repair or delivery: where it is, when it is ready",
        stems: &[
            "мой заказ",
            "моего заказа",
            "моя машина",
            "мою машину",
            "моей машин",
            "заказ номер",
            "номер заказа",
            "жду курьера",
            "где курьер",
            "тапсырысым",
            "my order",
            "my car ready",
        ],
        examples: &[
            "Где мой заказ? Уже долго жду",
            "Когда будет готов мой ремонт?",
            "Курьер до сих пор не приехал",
            "Заказ 2231 уже отправили?",
            "Тапсырысым қашан келеді?",
            "Where is my delivery?",
        ],
    },
];

/// The tenant's topics with the built-in definitions filled in: a built-in
/// name keeps its stems and examples and adds the tenant's; a topic of the
/// tenant's own has only its own (validation requires examples).
pub fn resolve(topics: &[HandoverTopic]) -> Vec<Topic> {
    topics
        .iter()
        .map(|t| {
            let built_in = BUILT_IN.iter().find(|b| b.name == t.name);
            let owned = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            let mut examples = built_in.map_or_else(Vec::new, |b| owned(b.examples));
            examples.extend(t.examples.iter().cloned());
            let mut stems = built_in.map_or_else(Vec::new, |b| owned(b.stems));
            stems.extend(t.stems.iter().map(|s| s.trim().to_lowercase()));
            Topic {
                name: t.name.clone(),
                description: t
                    .description
                    .clone()
                    .or_else(|| built_in.map(|b| b.description.to_owned()))
                    .unwrap_or_else(|| examples.join("; ")),
                examples,
                stems,
            }
        })
        .collect()
}

/// The first topic (in the tenant's order) a stem of which the text has.
pub fn by_stems<'a>(text: &str, topics: &'a [Topic]) -> Option<&'a Topic> {
    let lower = text.to_lowercase().replace('ё', "е");
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    topics.iter().find(|t| {
        t.stems.iter().any(|stem| {
            let stem = stem.replace('ё', "е");
            if stem.contains([' ', ',']) {
                lower.contains(&stem)
            } else {
                words.iter().any(|w| w.starts_with(&stem))
            }
        })
    })
}

/// The classification prompt's paragraph about topics.
pub fn prompt(topics: &[Topic]) -> Option<String> {
    if topics.is_empty() {
        return None;
    }
    let list: Vec<String> = topics
        .iter()
        .map(|t| format!("- {}: {}", t.name, t.description))
        .collect();
    Some(format!(
        "Topics a human manager handles. When the last message is about one, add \"topic\": \"<name>\" to the JSON (otherwise \"topic\": null):\n{}",
        list.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Topic> {
        let topics: Vec<HandoverTopic> = truffles_crds::client::BUILT_IN_HANDOVER_TOPICS
            .iter()
            .map(|n| serde_json::from_value(serde_json::json!({"name": n})).expect("a topic"))
            .collect();
        resolve(&topics)
    }

    #[test]
    fn every_built_in_name_has_a_definition() {
        for t in defaults() {
            assert!(!t.examples.is_empty() && !t.stems.is_empty(), "{}", t.name);
        }
    }

    #[test]
    fn stems_tell_a_request_from_a_question_about_the_rule() {
        let topics = defaults();
        let cases = [
            (
                "Можно перенести доставку на завтра?",
                Some("booking_change"),
            ),
            ("Отмените мой заказ, пожалуйста", Some("booking_change")),
            ("I need to cancel my order", Some("booking_change")),
            ("Я оплатила заказ, но подтверждения нет", Some("payment")),
            ("С карты списали два раза", Some("payment")),
            ("У меня аллергия на лидокаин", Some("medical")),
            ("Курьер нагрубил моей маме", Some("complaint")),
            ("Где мой заказ? Уже час жду", Some("order_status")),
            ("Моя машина готова?", Some("order_status")),
            // Answered from the documents, not handed over.
            ("Можно оплатить через Kaspi?", None),
            ("За сколько можно отменить запись без проблем?", None),
            ("Как записаться на приём?", None),
            ("Нужна ли предоплата за имплантацию?", None),
        ];
        for (text, topic) in cases {
            assert_eq!(
                by_stems(text, &topics).map(|t| t.name.as_str()),
                topic,
                "{text}"
            );
        }
    }

    #[test]
    fn a_tenants_topic_adds_to_or_replaces_the_built_in_set() {
        let topics: Vec<HandoverTopic> = serde_json::from_value(serde_json::json!([
            {"name": "payment", "stems": ["Рассрочк"]},
            {"name": "warranty", "examples": ["Гарантия закончилась, что делать?"], "stems": ["гаранти"]}
        ]))
        .expect("topics");
        let resolved = resolve(&topics);
        assert_eq!(resolved.len(), 2, "only the tenant's topics");
        assert!(resolved[0].stems.contains(&"рассрочк".to_owned()));
        assert!(resolved[0].stems.contains(&"списали".to_owned()));
        assert_eq!(resolved[1].description, "Гарантия закончилась, что делать?");
        assert_eq!(
            by_stems("Рассрочку дадите?", &resolved).map(|t| t.name.as_str()),
            Some("payment")
        );
        assert_eq!(
            by_stems("Какая гарантия?", &resolved).map(|t| t.name.as_str()),
            Some("warranty")
        );
        assert_eq!(by_stems("Отмените заказ", &resolved), None);
        let prompt = prompt(&resolved).expect("a paragraph");
        assert!(prompt.contains("- warranty:") && prompt.contains("\"topic\""));
        assert_eq!(super::prompt(&[]), None);
    }
}
