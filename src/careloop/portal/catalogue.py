"""Every sentence a patient reads about their care, reviewed and written plainly, EN and ES.

Clinical safety rule: the portal never shows a model's own wording or a raw probability. A plan
item appears only when a clinician accepted the card behind it, and it is worded from PLAN_ITEMS
below, keyed by the kind of card (the playbook or the kind of medicine check). A kind the
catalogue does not know gets the neutral GENERIC_ITEM sentence, never the card's text.

Reading level (tests/test_portal.py measures every entry with textstat): English at or under
grade 8 on the Flesch-Kincaid scale; Spanish at or above 60 on the Fernández Huerta scale
(60-70 is "normal", the 7th-8th grade band). Keep sentences short and words common; a change
that makes an entry harder fails the test.

Editing: each entry is one idea in both languages. Spanish uses "usted", as health services do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

Text = Mapping[str, str]  # language ("en", "es") -> text

LANGUAGES: Final = ("en", "es")

# -- My care: the plan items a clinician accepted, by kind -------------------------------------
# Kind: "playbook:<playbook id>" for a care plan card, or the card key's prefix for a medicine
# check ("interaction", "allergy", "duplicate", "renal") or a home-monitoring card ("monitoring").
PLAN_ITEMS: Final[Mapping[str, Text]] = {
    "playbook:sepsis-hour-1-bundle": {
        "en": "Your care team is checking you for a serious infection. "
        "They may take blood tests and start medicine soon.",
        "es": "Su equipo de salud lo revisa por una infección grave. "
        "Puede que le hagan análisis de sangre y le den medicina pronto.",
    },
    "playbook:news2-urgent-review": {
        "en": "Some of your vital signs changed. A doctor or nurse will see you soon "
        "and check you more often.",
        "es": "Algunos de sus signos vitales cambiaron. Un médico o una enfermera lo verá "
        "pronto y lo revisará más seguido.",
    },
    "playbook:news2-emergency-response": {
        "en": "Your vital signs changed a lot. A team will see you right away "
        "and watch you closely.",
        "es": "Sus signos vitales cambiaron mucho. Un equipo lo verá ahora mismo "
        "y lo vigilará de cerca.",
    },
    "playbook:diabetes-hba1c-follow-up": {
        "en": "It is time for a blood test that shows your sugar level over the last few months.",
        "es": "Es hora de un análisis de sangre que muestra su nivel de azúcar de los "
        "últimos meses.",
    },
    "playbook:hypertension-bp-follow-up": {
        "en": "It is time to check your blood pressure again. Your care team will set this up.",
        "es": "Es hora de medir su presión otra vez. Su equipo de salud lo va a organizar.",
    },
    "playbook:ckd-monitoring": {
        "en": "It is time for blood and urine tests that check how well your kidneys work.",
        "es": "Es hora de análisis de sangre y de orina para ver cómo funcionan sus riñones.",
    },
    "interaction": {
        "en": "Two of your medicines may not mix well. Your care team changed or checked them.",
        "es": "Dos de sus medicinas pueden no ir bien juntas. Su equipo de salud las cambió "
        "o las revisó.",
    },
    "allergy": {
        "en": "A new medicine may not be safe with your allergy. Your care team picked "
        "a safer one.",
        "es": "Una medicina nueva puede no ser segura por su alergia. Su equipo de salud "
        "eligió otra más segura.",
    },
    "duplicate": {
        "en": "Two of your medicines do the same job. Your care team checked that you "
        "need only one.",
        "es": "Dos de sus medicinas hacen lo mismo. Su equipo de salud revisó que solo "
        "necesite una.",
    },
    "renal": {
        "en": "Your kidneys clear some medicines slowly. Your care team changed a dose "
        "to keep you safe.",
        "es": "Sus riñones eliminan algunas medicinas despacio. Su equipo de salud cambió "
        "una dosis para cuidarlo.",
    },
    "monitoring": {
        "en": "Your home readings showed a change. A nurse looked at it and will "
        "follow up with you.",
        "es": "Las lecturas de su casa mostraron un cambio. Una enfermera lo revisó y "
        "hablará con usted.",
    },
}

GENERIC_ITEM: Final[Text] = {
    "en": "Your care team made a change to your plan. Ask them about it at your next visit.",
    "es": "Su equipo de salud hizo un cambio en su plan. Pregúnteles en su próxima visita.",
}

# -- My care: what careloop does, and the states of the page -----------------------------------
SENTENCES: Final[Mapping[str, Text]] = {
    "care.intro": {
        "en": "This page tells you what your care team decided with help from careloop. "
        "careloop is a computer program. It helps your care team. It does not make choices "
        "for you.",
        "es": "Esta página le dice lo que su equipo de salud decidió con ayuda de careloop. "
        "careloop es un programa de computadora. Ayuda a su equipo de salud. No toma "
        "decisiones por usted.",
    },
    "care.nothing_accepted": {
        "en": "Your care team has not changed your plan because of careloop. "
        "If they do, you will see it here.",
        "es": "Su equipo de salud no ha cambiado su plan por careloop. Si lo hace, lo verá aquí.",
    },
    "care.accepted_intro": {
        "en": "Your care team looked at what careloop found and agreed to these steps:",
        "es": "Su equipo de salud vio lo que careloop encontró y aceptó estos pasos:",
    },
    "care.risk_check": {
        "en": "careloop checks your vital signs and lab tests for early signs of a serious "
        "infection. Your care team reads the result. They will talk with you if it matters "
        "for your care.",
        "es": "careloop revisa sus signos vitales y sus análisis para ver señales tempranas "
        "de una infección grave. Su equipo de salud lee el resultado. Le hablarán si es "
        "importante para su cuidado.",
    },
    "care.no_risk_check": {
        "en": "careloop has not checked your record for signs of a serious infection.",
        "es": "careloop no ha revisado su historial por señales de una infección grave.",
    },
    "care.home_watch": {
        "en": "careloop watches the readings from your home devices. If it sees a change, "
        "a nurse looks at it.",
        "es": "careloop vigila las lecturas de sus aparatos en casa. Si ve un cambio, "
        "una enfermera lo revisa.",
    },
    "care.home_alert_reviewed": {
        "en": "A nurse is looking at a change in your home readings.",
        "es": "Una enfermera está revisando un cambio en las lecturas de su casa.",
    },
    "care.data_used": {
        "en": "To help your care team, careloop used these parts of your record:",
        "es": "Para ayudar a su equipo de salud, careloop usó estas partes de su historial:",
    },
    "care.no_data_used": {
        "en": "careloop has not used any part of your record yet.",
        "es": "careloop todavía no ha usado ninguna parte de su historial.",
    },
    "care.questions": {
        "en": "If you have a question, send a message to your care team.",
        "es": "Si tiene una pregunta, mande un mensaje a su equipo de salud.",
    },
    # -- My data --
    "data.intro": {
        "en": "Here you can see what is in your record and who looked at it.",
        "es": "Aquí puede ver lo que hay en su historial y quién lo miró.",
    },
    "data.history_intro": {
        "en": "Each time someone opens your record, careloop writes it down. "
        "No one can change this list.",
        "es": "Cada vez que alguien abre su historial, careloop lo anota. "
        "Nadie puede cambiar esta lista.",
    },
    "data.history_empty": {
        "en": "No one else has opened your record yet.",
        "es": "Nadie más ha abierto su historial todavía.",
    },
    "data.download": {
        "en": "You can get a copy of your whole record. The file uses FHIR, a format other "
        "health apps can read.",
        "es": "Puede obtener una copia de todo su historial. El archivo usa FHIR, un formato "
        "que otras aplicaciones de salud pueden leer.",
    },
    "data.delete_what": {
        "en": "You can ask us to delete your record. A staff member checks the request "
        "first. Some records must be kept by law.",
        "es": "Puede pedirnos que borremos su historial. Una persona del personal revisa "
        "primero su pedido. La ley nos pide guardar algunos datos.",
    },
    "data.delete_kept": {
        "en": "After we delete it, no one can read your record again, not even us. We keep "
        "the list of who opened your record. We also keep a note that it was deleted.",
        "es": "Después de borrarlo, nadie puede volver a leer su historial, ni siquiera "
        "nosotros. Guardamos la lista de quién abrió su historial. También guardamos una "
        "nota de que se borró.",
    },
    "data.delete_requested": {
        "en": "We got your request to delete your record. A staff member will look at it. "
        "Until then, your record stays as it is.",
        "es": "Recibimos su pedido para borrar su historial. Una persona del personal lo "
        "revisará. Hasta entonces, su historial sigue igual.",
    },
    # -- Sharing --
    "sharing.intro": {
        "en": "You choose who can use each part of your record. Your choice works from the "
        "next time someone opens it.",
        "es": "Usted elige quién puede usar cada parte de su historial. Su elección vale "
        "desde la próxima vez que alguien lo abra.",
    },
    "sharing.care_team": {
        "en": "Your care team uses your record to treat you. If you say no, they cannot "
        "see that part. This can make your care less safe.",
        "es": "Su equipo de salud usa su historial para tratarlo. Si dice que no, no pueden "
        "ver esa parte. Esto puede hacer su cuidado menos seguro.",
    },
    "sharing.emergency": {
        "en": "In an emergency, a doctor can still open it. That is written down and checked.",
        "es": "En una emergencia, un médico todavía puede abrirlo. Eso se anota y se revisa.",
    },
    "sharing.research": {
        "en": "Researchers study many records to learn about health. They never see your "
        "name. You can say no, and your care stays the same.",
        "es": "Los investigadores estudian muchos historiales para aprender sobre la salud. "
        "Nunca ven su nombre. Puede decir que no, y su cuidado sigue igual.",
    },
    "sharing.training": {
        "en": "careloop learns from past records to make better warnings. Your name is "
        "taken out first. You can say no, and your care stays the same.",
        "es": "careloop aprende de historiales pasados para dar mejores avisos. Primero se "
        "quita su nombre. Puede decir que no, y su cuidado sigue igual.",
    },
    "sharing.whole_record": {
        "en": "Your care team always needs your record as a whole to treat you. "
        "Use the rows below to hold back a part.",
        "es": "Su equipo de salud siempre necesita su historial completo para tratarlo. "
        "Use las filas de abajo para guardar una parte.",
    },
    "sharing.saved": {
        "en": "Your choices are saved. They work from now on.",
        "es": "Sus elecciones se guardaron. Valen desde ahora.",
    },
    "sharing.reset": {
        "en": "You can go back to the usual settings at any time.",
        "es": "Puede volver a las opciones normales cuando quiera.",
    },
    # -- Messages --
    "messages.intro": {
        "en": "Write to your care team here. Do not use this in an emergency. "
        "In an emergency, call for help.",
        "es": "Escriba aquí a su equipo de salud. No lo use en una emergencia. "
        "En una emergencia, llame para pedir ayuda.",
    },
    "messages.empty": {
        "en": "You have no messages yet.",
        "es": "Todavía no tiene mensajes.",
    },
    "messages.sent": {
        "en": "Your message was sent. Your care team will answer here.",
        "es": "Su mensaje se envió. Su equipo de salud le responderá aquí.",
    },
}

# -- What each part of a record is, and what careloop uses it for ------------------------------
DATA_KINDS: Final[Mapping[str, Text]] = {
    "vital-signs": {"en": "Vital signs", "es": "Signos vitales"},
    "lab-tests": {"en": "Lab tests", "es": "Análisis de laboratorio"},
    "home-devices": {"en": "Home devices and wearables", "es": "Aparatos de casa y relojes"},
    "conditions": {"en": "Health problems", "es": "Problemas de salud"},
    "medicines": {"en": "Medicines", "es": "Medicinas"},
    "allergies": {"en": "Allergies", "es": "Alergias"},
    "visits": {"en": "Visits and hospital stays", "es": "Visitas y estadías en el hospital"},
    "careloop-findings": {
        "en": "careloop's notes for your care team",
        "es": "Notas de careloop para su equipo de salud",
    },  # fmt: skip
    "messages": {"en": "Messages", "es": "Mensajes"},
    "sharing": {"en": "Your sharing choices", "es": "Sus elecciones para compartir"},
    "about-you": {"en": "Facts about you", "es": "Datos sobre usted"},
    "other": {"en": "Other", "es": "Otros"},
}
# Why careloop reads each kind (only kinds a careloop model or check reads are listed).
DATA_USES: Final[Mapping[str, Text]] = {
    "vital-signs": {
        "en": "Used to watch for signs of a serious infection or of getting worse.",
        "es": "Se usan para ver señales de una infección grave o de que usted empeora.",
    },
    "lab-tests": {
        "en": "Used to watch for a serious infection and to see when a test is due.",
        "es": "Se usan para ver una infección grave y saber cuándo toca un análisis.",
    },
    "home-devices": {
        "en": "Used to spot changes from what is usual for you.",
        "es": "Se usan para notar cambios en lo que es normal para usted.",
    },
    "conditions": {
        "en": "Used to know which checkups you need.",
        "es": "Se usan para saber qué chequeos necesita.",
    },
    "medicines": {
        "en": "Used to check that your medicines are safe together.",
        "es": "Se usan para revisar que sus medicinas sean seguras juntas.",
    },
    "allergies": {
        "en": "Used to check that a new medicine is safe for you.",
        "es": "Se usan para revisar que una medicina nueva sea segura para usted.",
    },
    "careloop-findings": {
        "en": "Notes careloop wrote for your care team to read.",
        "es": "Notas que careloop escribió para que su equipo de salud las lea.",
    },
}
# Kinds careloop writes rather than reads: listed on My data, not under "what careloop used".
WRITTEN_BY_CARELOOP: Final = frozenset({"careloop-findings"})

# -- Sharing: the rows (parts of the record) and columns (who may use them) --------------------
SHARING_ROWS: Final[Mapping[str, Text]] = {
    "whole-record": {"en": "My whole record", "es": "Todo mi historial"},
    "vital-signs": {"en": "Vital signs", "es": "Signos vitales"},
    "lab-tests": {"en": "Lab tests", "es": "Análisis de laboratorio"},
    "home-devices": {"en": "Home devices and wearables", "es": "Aparatos de casa y relojes"},
    "medicines": {"en": "Medicines", "es": "Medicinas"},
    "mental-health": {"en": "Mental health", "es": "Salud mental"},
    "substance-use": {"en": "Alcohol and drug use", "es": "Uso de alcohol y drogas"},
    "reproductive-health": {
        "en": "Sexual and reproductive health",
        "es": "Salud sexual y reproductiva",
    },  # fmt: skip
    "hiv": {"en": "HIV", "es": "VIH"},
    "genetics": {"en": "Genetic tests", "es": "Pruebas genéticas"},
}
SHARING_ROW_HELP: Final[Mapping[str, Text]] = {
    "whole-record": {
        "en": "Everything in your record.",
        "es": "Todo lo que hay en su historial.",
    },
    "vital-signs": {
        "en": "Pulse, blood pressure, breathing, oxygen, fever and weight.",
        "es": "El pulso, la presión, el aire que respira, la fiebre y el peso.",
    },
    "lab-tests": {
        "en": "Blood and urine tests careloop reads, like sugar, kidney and infection tests.",
        "es": "Análisis de sangre y orina que careloop lee, como azúcar, riñón e infección.",
    },
    "home-devices": {
        "en": "Steps, sleep and heart rhythm from a watch or tracker. Blood pressure from "
        "a home cuff counts as a vital sign.",
        "es": "Pasos, sueño y ritmo del corazón de un reloj. La presión medida en casa "
        "cuenta como signo vital.",
    },
    "medicines": {
        "en": "The medicines you take or were given.",
        "es": "Las medicinas que toma o que le dieron.",
    },
    "mental-health": {
        "en": "Care for mood, stress and other mental health needs.",
        "es": "Cuidado del ánimo, el estrés y otras necesidades de salud mental.",
    },
    "substance-use": {
        "en": "Care for alcohol or drug use.",
        "es": "Cuidado por uso de alcohol o drogas.",
    },
    "reproductive-health": {
        "en": "Care for pregnancy, birth control and sex.",
        "es": "Embarazo, métodos para no tener hijos y cuidados así.",
    },
    "hiv": {"en": "HIV tests and care.", "es": "Pruebas y cuidado del VIH."},
    "genetics": {
        "en": "Tests of your genes.",
        "es": "Pruebas de sus genes.",
    },
}
SHARING_COLUMNS: Final[Mapping[str, Text]] = {
    "care-team": {"en": "My care team", "es": "Mi equipo de salud"},
    "research": {"en": "Research", "es": "Investigación"},
    "model-training": {"en": "Training careloop", "es": "Entrenar a careloop"},
}

# -- Who looked at my record: words for the audit trail ----------------------------------------
ROLES: Final[Mapping[str, Text]] = {
    "clinician": {"en": "doctor", "es": "médico"},
    "nurse": {"en": "nurse", "es": "enfermera"},
    "pharmacist": {"en": "pharmacist", "es": "farmacéutico"},
    "care-coordinator": {"en": "care coordinator", "es": "coordinador de cuidado"},
    "patient": {"en": "patient", "es": "paciente"},
    "data-scientist": {"en": "data scientist", "es": "científico de datos"},
    "auditor": {"en": "auditor", "es": "auditor"},
    "ai-committee": {"en": "AI committee", "es": "comité de IA"},
    "admin": {"en": "administrator", "es": "administrador"},
    "integration": {"en": "data feed", "es": "envío de datos"},
    "ehr": {"en": "hospital record system", "es": "sistema del hospital"},
    "monitor": {"en": "home monitoring", "es": "monitoreo en casa"},
}
ACTIONS: Final[Mapping[str, Text]] = {
    "read": {"en": "read", "es": "leyó"},
    "vread": {"en": "read", "es": "leyó"},
    "history": {"en": "read past versions", "es": "leyó versiones pasadas"},
    "search": {"en": "searched", "es": "buscó"},
    "create": {"en": "wrote", "es": "escribió"},
    "update": {"en": "changed", "es": "cambió"},
    "delete": {"en": "deleted", "es": "borró"},
    "ingest": {"en": "added data", "es": "agregó datos"},
    "score": {"en": "ran a check", "es": "hizo una revisión"},
    "card": {"en": "made a suggestion", "es": "hizo una sugerencia"},
    "feedback": {"en": "answered a suggestion", "es": "respondió a una sugerencia"},
    "consent-decision": {"en": "recorded a sharing choice", "es": "anotó una elección"},
    "export": {"en": "exported a copy", "es": "exportó una copia"},
    "deidentified-export": {"en": "used without your name", "es": "usó sin su nombre"},
    "amendment-request": {"en": "asked for a correction", "es": "pidió una corrección"},
    "erasure": {"en": "deletion", "es": "borrado"},
    "break-glass": {"en": "emergency access", "es": "acceso de emergencia"},
}
PURPOSES: Final[Mapping[str, Text]] = {
    "TREAT": {"en": "to treat you", "es": "para tratarlo"},
    "ETREAT": {"en": "emergency care", "es": "atención de emergencia"},
    "BTG": {"en": "emergency access", "es": "acceso de emergencia"},
    "HRESCH": {"en": "research", "es": "investigación"},
    "HQUALIMP": {"en": "to check quality of care", "es": "para revisar la calidad"},
    "HOPERAT": {"en": "to run the service", "es": "para operar el servicio"},
    "PATRQT": {"en": "at your request", "es": "a su pedido"},
    "MODELTRAIN": {"en": "to train careloop", "es": "para entrenar a careloop"},
}
FLAGS: Final[Mapping[str, Text]] = {
    "break-glass": {
        "en": "Emergency access. It will be checked.",
        "es": "Acceso de emergencia. Se va a revisar.",
    },
    "no-care-relationship": {
        "en": "Not on your care team. It will be checked.",
        "es": "No es de su equipo de salud. Se va a revisar.",
    },
    "consent-denied": {
        "en": "Some data was held back, as you chose.",
        "es": "Algunos datos no se mostraron, como usted eligió.",
    },
    "other-patient": {
        "en": "They were not let in.",
        "es": "No se le dejó entrar.",
    },
    "erasure-requested": {
        "en": "You asked to delete your record.",
        "es": "Usted pidió borrar su historial.",
    },
    "erasure": {"en": "Your record was deleted.", "es": "Su historial se borró."},
    "refused": {"en": "It was not allowed.", "es": "No se le dejó."},
}

# -- Short labels of the pages (not sentences; their reading level is not measured) ------------
LABELS: Final[Mapping[str, Text]] = {
    "care.title": {"en": "My care", "es": "Mi cuidado"},
    "care.plan": {"en": "My plan", "es": "Mi plan"},
    "care.checks": {"en": "What careloop checks", "es": "Lo que careloop revisa"},
    "care.data": {"en": "What careloop used", "es": "Lo que careloop usó"},
    "care.accepted_on": {"en": "Agreed on", "es": "Aceptado el"},
    "care.last_check": {"en": "Last check", "es": "Última revisión"},
    "data.title": {"en": "My data", "es": "Mis datos"},
    "data.what": {"en": "What is in my record", "es": "Lo que hay en mi historial"},
    "data.kind": {"en": "Kind of data", "es": "Tipo de datos"},
    "data.count": {"en": "How many", "es": "Cuántos"},
    "data.used_for": {"en": "What careloop uses it for", "es": "Para qué lo usa careloop"},
    "data.not_used": {"en": "Not used by careloop", "es": "careloop no lo usa"},
    "data.counts_caption": {"en": "The parts of my record", "es": "Las partes de mi historial"},
    "data.history": {"en": "Who looked at my record", "es": "Quién miró mi historial"},
    "data.history_caption": {
        "en": "Who looked at my record, newest first",
        "es": "Quién miró mi historial, lo más nuevo primero",
    },  # fmt: skip
    "data.when": {"en": "When", "es": "Cuándo"},
    "data.who": {"en": "Who", "es": "Quién"},
    "data.did": {"en": "What", "es": "Qué hizo"},
    "data.why": {"en": "Why", "es": "Por qué"},
    "data.notes": {"en": "Notes", "es": "Notas"},
    "data.include_mine": {"en": "Show my own visits too", "es": "Mostrar también mis visitas"},
    "data.others_only": {"en": "Show only others", "es": "Mostrar solo a otros"},
    "data.item": {"en": "item", "es": "elemento"},
    "data.items": {"en": "items", "es": "elementos"},
    "data.you": {"en": "You", "es": "Usted"},
    "data.system": {"en": "careloop system", "es": "sistema careloop"},
    "data.download_title": {"en": "Download my data", "es": "Descargar mis datos"},
    "data.download_button": {
        "en": "Download my record (JSON file)",
        "es": "Descargar mi historial (archivo JSON)",
    },  # fmt: skip
    "data.delete_title": {"en": "Ask to delete my record", "es": "Pedir que borren mi historial"},
    "data.delete_confirm": {
        "en": "I understand. Please delete my record.",
        "es": "Entiendo. Por favor, borren mi historial.",
    },
    "data.delete_button": {"en": "Send my request", "es": "Enviar mi pedido"},
    "data.requested_on": {"en": "Asked on", "es": "Pedido el"},
    "sharing.title": {"en": "Sharing", "es": "Compartir"},
    "sharing.caption": {
        "en": "Who may use each part of my record (checked means yes)",
        "es": "Quién puede usar cada parte de mi historial (marcado quiere decir sí)",
    },  # fmt: skip
    "sharing.part": {"en": "Part of my record", "es": "Parte de mi historial"},
    "sharing.always": {"en": "Always (needed for care)", "es": "Siempre (se necesita)"},
    "sharing.save": {"en": "Save my choices", "es": "Guardar mis elecciones"},
    "sharing.reset_button": {
        "en": "Go back to the usual settings",
        "es": "Volver a las opciones normales",
    },  # fmt: skip
    "sharing.who": {"en": "Who uses it", "es": "Quién lo usa"},
    "sharing.allow": {"en": "Allow", "es": "Permitir"},
    "messages.title": {"en": "Messages", "es": "Mensajes"},
    "messages.write": {"en": "Write to my care team", "es": "Escribir a mi equipo de salud"},
    "messages.label": {"en": "Your message", "es": "Su mensaje"},
    "messages.limit": {"en": "Up to 2000 characters.", "es": "Hasta 2000 caracteres."},
    "messages.send": {"en": "Send", "es": "Enviar"},
    "messages.list": {"en": "My messages", "es": "Mis mensajes"},
    "messages.care_team": {"en": "Your care team", "es": "Su equipo de salud"},
    "messages.reply_to": {"en": "Answer to your message", "es": "Respuesta a su mensaje"},
    "lang.label": {"en": "Language", "es": "Idioma"},
    "lang.button": {"en": "Change", "es": "Cambiar"},
}


def say(table: Mapping[str, Text], key: str, lang: str) -> str:
    """One entry in the reader's language (English when the language is not one of ours)."""
    entry = table[key]
    return entry.get(lang) or entry["en"]


def plan_item_text(kind: str, lang: str) -> str:
    """The reviewed sentence for an accepted plan item; the neutral one for an unknown kind."""
    entry = PLAN_ITEMS.get(kind, GENERIC_ITEM)
    return entry.get(lang) or entry["en"]
