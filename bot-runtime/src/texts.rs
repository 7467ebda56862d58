//! The bot's fixed phrases in the customers' three languages. A tenant's own
//! Russian texts (prompts `handover_notice`, `fallback_critical`) replace the
//! Russian ones.

use crate::decide::Language;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phrase {
    Greeting,
    /// Put before an answer when the customer greeted first.
    Salutation,
    HandoverNotice,
    /// The last step of the fallback chain (docs/architecture.md, "Errors and fallbacks": the hardcoded apology).
    Apology,
    NoAnswer,
    Clarify,
    OffTopic,
    VoiceNotUnderstood,
}

pub fn phrase(p: Phrase, lang: Language) -> &'static str {
    use Language::*;
    use Phrase::*;
    match (p, lang) {
        (Greeting, Ru) => "Здравствуйте! Чем могу помочь?",
        (Greeting, Kk) => "Сәлеметсіз бе! Қалай көмектесе аламын?",
        (Greeting, En) => "Hello! How can I help you?",
        (Salutation, Ru) => "Здравствуйте!",
        (Salutation, Kk) => "Сәлеметсіз бе!",
        (Salutation, En) => "Hello!",
        (HandoverNotice, Ru) => "Передаю ваш вопрос менеджеру, он скоро ответит вам здесь.",
        (HandoverNotice, Kk) => "Сұрағыңызды менеджерге жібердім, ол жақында осында жауап береді.",
        (HandoverNotice, En) => {
            "I've passed your question to a manager, who will reply here shortly."
        }
        (Apology, Ru) => "Извините, технические проблемы. Менеджер свяжется с вами.",
        (Apology, Kk) => "Кешіріңіз, техникалық ақау. Менеджер сізбен байланысады.",
        (Apology, En) => "Sorry, we are having technical problems. A manager will contact you.",
        (NoAnswer, Ru) => {
            "К сожалению, у меня нет точной информации по этому вопросу. Могу передать его менеджеру — напишите «менеджер»."
        }
        (NoAnswer, Kk) => {
            "Өкінішке қарай, бұл сұрақ бойынша нақты ақпаратым жоқ. Менеджерге жіберуге болады — «менеджер» деп жазыңыз."
        }
        (NoAnswer, En) => {
            "Sorry, I don't have reliable information on that. I can pass it to a manager — just write \"manager\"."
        }
        (Clarify, Ru) => "Уточните, пожалуйста, ваш вопрос — что именно вас интересует?",
        (Clarify, Kk) => "Сұрағыңызды нақтылап жазыңызшы — сізді не қызықтырады?",
        (Clarify, En) => "Could you tell me a bit more about what you need?",
        (OffTopic, Ru) => "Я отвечаю только на вопросы о нашей компании и её услугах.",
        (OffTopic, Kk) => {
            "Мен тек біздің компания және оның қызметтері туралы сұрақтарға жауап беремін."
        }
        (OffTopic, En) => "I can only help with questions about our company and its services.",
        (VoiceNotUnderstood, Ru) => {
            "Не получилось разобрать голосовое сообщение. Напишите, пожалуйста, текстом."
        }
        (VoiceNotUnderstood, Kk) => "Дауыстық хабарламаны түсіне алмадым. Мәтінмен жазыңызшы.",
        (VoiceNotUnderstood, En) => {
            "I couldn't make out the voice message. Could you write it as text, please?"
        }
    }
}
