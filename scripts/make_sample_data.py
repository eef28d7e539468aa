"""Small, deterministic synthetic chat datasets in the schemas of two public Hugging Face datasets.

Why: the pipeline has to run end to end where nothing can be downloaded at run time, so the real
``HuggingFaceH4/ultrachat_200k`` (SFT dialogues) and ``HuggingFaceH4/ultrafeedback_binarized``
(preference pairs) are not available. This module writes stand-ins with exactly the same row schemas,
composed from hand-written topic fact lists by a seeded ``random.Random``: the same seed always gives
byte-identical files, and only the standard library is used.

The preference pairs carry a signal that is not length. The chosen answer is on-topic and helpful;
the rejected answer is an evasive disclaimer/refusal (45%), a hedging non-answer (40%), a fluent
answer about a different topic (7.5%), or an answer that starts on topic and then loops on one
sentence (7.5%), built to roughly the same number of characters as the chosen one. (A 1.8M-parameter
model learns the first two kinds from 1000 pairs, ~0.99 held-out accuracy, but not the last two,
~0.5-0.7: they need an understanding of content, not of style.) A reward model or DPO can
therefore only separate them by relevance and helpfulness, never by counting tokens.

Regenerate the bundled files with ``python scripts/make_sample_data.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import NamedTuple

SAMPLE_ROOT = Path(__file__).resolve().parents[1] / "src" / "zephyr_train" / "data" / "sample_files"


class Topic(NamedTuple):
    name: str
    kws: tuple[str, ...]
    facts: tuple[str, ...]
    code: tuple[str, ...] = ()


def _t(name: str, kws: str, facts: str, code: tuple[str, ...] = ()) -> Topic:
    split = tuple(k.strip() for k in kws.split(",")), tuple(f.strip() for f in facts.split("|"))
    return Topic(name, *split, code)


PY_CODE = (
    "```python\nsquares = [n * n for n in range(10) if n % 2 == 0]\nprint(squares)  # [0, 4, 16, 36]\n```",
    (
        "```python\ndef read_numbers(path: str) -> list[int]:\n    try:\n"
        "        with open(path, encoding=\"utf-8\") as f:\n"
        "            return [int(line) for line in f if line.strip()]\n"
        "    except FileNotFoundError:\n        return []\n```"
    ),
    (
        "```python\ndef countdown(n):\n    while n > 0:\n        yield n\n        n -= 1\n\n"
        "for value in countdown(3):\n    print(value)\n```"
    ),
)
JS_CODE = (
    (
        "```javascript\nasync function loadUser(id) {\n  const response = await fetch(`/api/users/${id}`);\n"
        "  return response.json();\n}\n```"
    ),
    (
        "```javascript\ndocument.querySelector(\"#save\").addEventListener(\"click\", () => {\n"
        "  console.log(\"Saved!\");\n});\n```"
    ),
)
SQL_CODE = (
    (
        "```sql\nSELECT c.name, COUNT(o.id) AS orders\nFROM customers AS c\n"
        "JOIN orders AS o ON o.customer_id = c.id\nGROUP BY c.name;\n```"
    ),
)
ML_CODE = (
    (
        "```python\nfrom sklearn.model_selection import train_test_split\n\n"
        "X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)\n```"
    ),
)

TOPICS: tuple[Topic, ...] = (
    _t("cooking", "searing, braising, mise en place, seasoning, caramelization, knife skills",
       "Searing meat over high heat creates a flavorful brown crust through the Maillard reaction. | "
       "Braising combines a quick sear with long, slow cooking in a small amount of liquid. | Mise en "
       "place means preparing and measuring every ingredient before you start cooking. | Salt enhances "
       "flavor and is best added gradually while you taste along the way. | Caramelization begins when "
       "sugar is heated to roughly 160 degrees Celsius. | A sharp knife is safer than a dull one because "
       "it needs less force and slips less. | Resting meat for a few minutes after cooking lets the juices "
       "redistribute. | Acidic ingredients such as lemon juice or vinegar can brighten a heavy dish."),
    _t("astronomy", "black holes, the Milky Way, light-years, red giants, exoplanets, telescopes",
       "A light-year is the distance light travels in one year, about 9.46 trillion kilometers. | The "
       "Milky Way is a barred spiral galaxy with an estimated 100 to 400 billion stars. | Black holes form "
       "when massive stars collapse and their gravity prevents even light from escaping. | The Sun will "
       "swell into a red giant in roughly five billion years. | Thousands of exoplanets have been "
       "confirmed since the first detections in the 1990s. | Telescopes collect far more light than the "
       "human eye, revealing faint and distant objects. | The nearest star to the Sun, Proxima Centauri, "
       "is about 4.24 light-years away. | Many of the atoms in our bodies were forged inside ancient "
       "stars."),
    _t("gardening", "compost, soil pH, crop rotation, mulch, pruning, pollinators",
       "Compost adds organic matter that improves soil structure and feeds beneficial microbes. | Most "
       "vegetables grow best in slightly acidic soil with a pH between 6.0 and 7.0. | Crop rotation "
       "reduces pests and diseases that build up when one plant family is grown in the same spot. | A "
       "layer of mulch keeps moisture in the soil and suppresses weeds. | Pruning removes dead or crowded "
       "branches and encourages healthy new growth. | Bees, butterflies and other pollinators are "
       "essential for many fruit crops. | Watering deeply but less often encourages plants to grow deeper "
       "roots. | Tomatoes need at least six to eight hours of direct sunlight per day."),
    _t("programming in Python", "list comprehensions, virtual environments, type hints, generators, "
       "dictionaries, exceptions",
       "Python uses indentation rather than braces to define blocks of code. | List "
       "comprehensions are a concise way to build a new list from an existing iterable. | A "
       "virtual environment keeps each project's dependencies isolated from the others. | Type "
       "hints do not change how Python runs, but they help editors and static checkers find bugs. "
       "| Generators produce values lazily, which saves memory on large sequences. | Dictionaries "
       "store key-value pairs and offer fast lookups by key. | Exceptions are handled with try "
       "and except blocks, and a finally block runs cleanup code either way. | The standard "
       "library includes modules for files, dates, JSON, networking and much more.", PY_CODE),
    _t("the history of Rome", "the Roman Republic, Julius Caesar, the Senate, aqueducts, the Colosseum, "
       "Augustus",
       "According to legend, Rome was founded in 753 BC by Romulus and Remus. | The Roman Republic was "
       "established around 509 BC after the last king was expelled. | Julius Caesar was assassinated in a "
       "meeting of the Senate on the Ides of March in 44 BC. | Augustus became the first Roman emperor in "
       "27 BC. | Roman aqueducts carried fresh water into cities over many kilometers. | The Colosseum, "
       "completed in 80 AD, could hold around 50,000 spectators. | Latin, the language of Rome, is the "
       "ancestor of Italian, Spanish, French, Portuguese and Romanian. | The Western Roman Empire is "
       "traditionally said to have fallen in 476 AD."),
    _t("personal finance", "budgeting, an emergency fund, compound interest, index funds, credit scores, "
       "debt",
       "A budget tracks income and expenses so you can see where your money actually goes. | Many advisers "
       "suggest keeping three to six months of expenses in an emergency fund. | Compound interest means "
       "you earn returns on both your savings and your past returns. | Index funds track a market index "
       "and usually charge lower fees than actively managed funds. | Paying off high-interest debt first "
       "often saves more than any investment would earn. | Credit scores depend on payment history, credit "
       "utilization and the length of your credit history. | Automating savings makes it easier to stay "
       "consistent. | Diversification spreads risk across many different assets."),
    _t("marine biology", "coral reefs, plankton, whales, ocean acidification, the deep sea, kelp forests",
       "Coral reefs cover less than one percent of the ocean floor but support about a quarter of marine "
       "species. | Phytoplankton produce a large share of the oxygen in Earth's atmosphere. | The blue "
       "whale is the largest animal known to have ever lived. | Ocean acidification happens as seawater "
       "absorbs carbon dioxide from the air. | Many creatures in the deep sea produce their own light "
       "through bioluminescence. | Kelp forests can grow up to half a meter per day under ideal "
       "conditions. | Octopuses have three hearts and blue, copper-based blood. | Sea turtles return to "
       "the beaches where they hatched to lay their own eggs."),
    _t("photography", "aperture, shutter speed, ISO, composition, the rule of thirds, lighting",
       "Aperture controls how much light enters the lens and affects depth of field. | A fast shutter "
       "speed freezes motion, while a slow one creates motion blur. | Raising the ISO makes the sensor "
       "more sensitive to light but adds noise. | The rule of thirds places key subjects along lines that "
       "divide the frame into nine parts. | Soft light during the golden hour flatters most subjects. | "
       "Shooting in RAW format preserves more detail for editing than JPEG. | A tripod allows sharp images "
       "at slow shutter speeds. | Good composition often matters more than expensive equipment."),
    _t("music theory", "scales, chords, intervals, rhythm, key signatures, the circle of fifths",
       "A major scale follows the pattern whole, whole, half, whole, whole, whole, half. | Chords are "
       "built by stacking intervals, most commonly thirds. | An interval is the distance in pitch between "
       "two notes. | The circle of fifths shows how the twelve keys relate to one another. | Key "
       "signatures tell the performer which notes are sharp or flat throughout a piece. | Most popular "
       "music uses four beats per measure. | Minor keys are often described as sounding darker than major "
       "keys. | An octave separates two pitches when one has double the frequency of the other."),
    _t("chess", "openings, castling, the endgame, tactics, pawn structure, checkmate",
       "Each player starts with sixteen pieces, including eight pawns. | Castling moves the king two "
       "squares toward a rook and is the only move that shifts two pieces at once. | Good openings develop "
       "pieces quickly and fight for control of the center. | Common tactics include forks, pins and "
       "skewers. | In the endgame the king becomes an active and powerful piece. | Pawn structure shapes "
       "long-term plans because pawns cannot move backward. | Checkmate ends the game when the king is "
       "attacked and has no legal escape. | Solving puzzles regularly is one of the fastest ways to "
       "improve."),
    _t("climate science", "the greenhouse effect, carbon dioxide, sea level rise, climate models, feedback "
       "loops, renewable energy",
       "The greenhouse effect keeps Earth warm by trapping part of the heat radiated from the surface. | "
       "Atmospheric carbon dioxide has risen from about 280 parts per million before industrialization to "
       "over 420 today. | Sea level rise is driven by melting ice and the expansion of warming seawater. | "
       "Climate models use the laws of physics to simulate the atmosphere, oceans and ice. | Melting ice "
       "exposes darker surfaces that absorb more heat, which creates a feedback loop. | Weather describes "
       "short-term conditions, while climate describes long-term averages. | Wind and solar power produce "
       "little carbon dioxide while they operate. | The last decade was the warmest on record."),
    _t("nutrition", "protein, fiber, vitamins, hydration, whole grains, healthy fats",
       "Protein supplies amino acids that the body uses to build and repair tissue. | Fiber supports "
       "digestion and helps you feel full for longer. | Vitamin D is produced in the skin when it is "
       "exposed to sunlight. | Whole grains keep the bran and germ, which hold most of the fiber and "
       "nutrients. | Unsaturated fats in olive oil, nuts and fish are linked to better heart health. | "
       "Adequate hydration matters for concentration, temperature control and digestion. | A varied diet "
       "with plenty of vegetables covers most nutrient needs. | Added sugar provides energy but few other "
       "nutrients."),
    _t("running", "pacing, interval training, recovery, running shoes, long runs, cadence",
       "Most training for beginners should be at an easy, conversational pace. | Interval training "
       "alternates hard efforts with periods of rest or easy jogging. | Increasing weekly distance "
       "gradually, often by about ten percent, lowers the risk of injury. | Rest days give muscles, "
       "tendons and bones time to adapt. | Running shoes should fit comfortably, and there is no single "
       "best shoe for everyone. | Long runs build endurance and teach the body to use fat as fuel. | A "
       "slightly higher cadence can reduce overstriding. | A marathon is 42.195 kilometers long."),
    _t("the human brain", "neurons, synapses, memory, the prefrontal cortex, neuroplasticity, the "
       "hippocampus",
       "The human brain contains roughly 86 billion neurons. | Neurons communicate across tiny gaps called "
       "synapses using chemical messengers. | The hippocampus plays a central role in forming new "
       "memories. | The prefrontal cortex supports planning, decision-making and self-control. | "
       "Neuroplasticity is the brain's ability to rewire itself in response to experience. | Sleep helps "
       "consolidate what you learned during the day. | The brain uses about twenty percent of the body's "
       "energy despite being about two percent of its mass. | Regular exercise is associated with better "
       "memory and mood."),
    _t("volcanoes", "magma, lava, tectonic plates, eruptions, the Ring of Fire, volcanic ash",
       "Magma is molten rock beneath the surface, and once it erupts it is called lava. | Most volcanoes "
       "form where tectonic plates collide or pull apart. | The Ring of Fire around the Pacific Ocean "
       "hosts about three quarters of the world's active volcanoes. | Explosive eruptions happen when "
       "thick, gas-rich magma builds up pressure. | Volcanic ash can travel thousands of kilometers and "
       "disrupt air traffic. | Hawaii's volcanoes formed over a hotspot in the middle of a plate. | The "
       "1815 eruption of Mount Tambora led to the \"year without a summer\" in 1816. | Volcanic soils are "
       "often very fertile."),
    _t("ancient Egypt", "the pyramids, pharaohs, hieroglyphs, the Nile, mummification, the Rosetta Stone",
       "The Great Pyramid of Giza was built around 2560 BC for the pharaoh Khufu. | The yearly flooding of "
       "the Nile left rich silt that made farming possible. | Hieroglyphs combined symbols for sounds and "
       "for whole words. | The Rosetta Stone, found in 1799, helped scholars decipher hieroglyphs. | "
       "Mummification was meant to preserve the body for the afterlife. | Pharaohs were seen as both "
       "political rulers and divine figures. | Cleopatra VII was the last active ruler of the Ptolemaic "
       "Kingdom. | Papyrus, made from a reed that grew along the Nile, was used as writing material."),
    _t("web development with JavaScript", "the DOM, promises, async functions, event listeners, closures, "
       "the npm registry",
       "JavaScript runs in every major web browser and, through Node.js, on servers. | The DOM is "
       "a tree representation of a web page that scripts can read and modify. | Promises "
       "represent the eventual result of an asynchronous operation. | The async and await "
       "keywords make asynchronous code read like synchronous code. | Event listeners run a "
       "function when something happens, such as a click. | A closure is a function that "
       "remembers variables from the scope where it was created. | The npm registry hosts "
       "millions of open-source packages. | Using const and let instead of var avoids many "
       "scoping surprises.", JS_CODE),
    _t("SQL databases", "primary keys, joins, indexes, transactions, normalization, queries",
       "SQL stands for Structured Query Language. | A primary key uniquely identifies each row "
       "in a table. | Joins combine rows from two or more tables based on a related column. | "
       "Indexes speed up lookups at the cost of extra storage and slower writes. | Transactions "
       "group statements so that they either all succeed or all fail. | Normalization organizes "
       "tables to reduce duplicated data. | The WHERE clause filters rows, while GROUP BY "
       "aggregates them. | Parameterized queries protect against SQL injection.", SQL_CODE),
    _t("machine learning", "training data, overfitting, neural networks, gradient descent, validation sets, "
       "features",
       "Machine learning models learn patterns from examples instead of following hand-written "
       "rules. | Overfitting happens when a model memorizes the training data and fails on new "
       "data. | Gradient descent adjusts model parameters step by step to reduce the loss. | A "
       "validation set is held out to estimate how well a model generalizes. | Neural networks "
       "are built from layers of simple units connected by learned weights. | The quality of the "
       "training data often matters more than the choice of algorithm. | Features are the "
       "measurable inputs a model uses to make predictions. | Regularization techniques such as "
       "dropout help reduce overfitting.", ML_CODE),
    _t("coffee", "espresso, arabica beans, roasting, grind size, the brewing ratio, caffeine",
       "Arabica and robusta are the two most widely grown coffee species. | Espresso is brewed by forcing "
       "hot water through finely ground coffee under pressure. | Lighter roasts keep more of the bean's "
       "origin flavors, while darker roasts taste more bitter and smoky. | Grind size should match the "
       "brewing method, fine for espresso and coarse for a French press. | A common brewing ratio is about "
       "one gram of coffee to sixteen grams of water. | Water at around 90 to 96 degrees Celsius extracts "
       "flavor well. | Coffee beans are actually the seeds of a cherry-like fruit. | An average cup of "
       "brewed coffee contains roughly 80 to 100 milligrams of caffeine."),
    _t("birdwatching", "binoculars, field guides, migration, bird songs, habitats, identification",
       "Binoculars with 8x magnification are a popular choice for beginners. | A field guide helps with "
       "identification by showing plumage, size and range. | Many birds are most active and vocal in the "
       "early morning. | Learning bird songs lets you identify species you cannot see. | Migration lets "
       "birds follow food and favorable weather across the seasons. | Different habitats, such as wetlands "
       "and forests, attract different species. | Keeping a checklist helps you track what you have seen. "
       "| Staying quiet and moving slowly makes birds less likely to fly away."),
    _t("the French Revolution", "the storming of the Bastille, the Estates-General, the Reign of Terror, "
       "Napoleon, the monarchy, the Declaration of the Rights of Man",
       "The French Revolution began in 1789 amid a financial crisis and widespread hunger. | The "
       "Estates-General met in May 1789 for the first time since 1614. | The storming of the Bastille on "
       "14 July 1789 became a symbol of the revolution. | The Declaration of the Rights of Man and of the "
       "Citizen was adopted in August 1789. | King Louis XVI was executed in January 1793, ending the "
       "monarchy. | The Reign of Terror saw thousands of suspected enemies of the revolution executed. | "
       "Napoleon Bonaparte seized power in a coup in 1799. | The revolution spread ideas of liberty and "
       "equality across Europe."),
    _t("electric cars", "batteries, charging, range, regenerative braking, electric motors, charging "
       "stations",
       "Electric cars store energy in lithium-ion battery packs. | Regenerative braking recovers energy "
       "that would otherwise be lost as heat. | Electric motors deliver full torque instantly, so "
       "acceleration feels quick. | Range depends on battery size, speed, temperature and driving style. | "
       "Charging at home overnight is the most convenient option for many owners. | Fast charging stations "
       "can add hundreds of kilometers of range in under an hour. | Electric cars have fewer moving parts "
       "than gasoline cars, which simplifies maintenance. | Cold weather can temporarily reduce battery "
       "range."),
    _t("sleep", "REM sleep, the circadian rhythm, sleep hygiene, melatonin, naps, insomnia",
       "Most adults need seven to nine hours of sleep per night. | The circadian rhythm is an internal "
       "clock that runs on a cycle of about 24 hours. | REM sleep is the stage most associated with vivid "
       "dreams. | Melatonin is a hormone that signals to the body that it is time to sleep. | Bright "
       "screens late at night can delay the release of melatonin. | Good sleep hygiene includes a "
       "consistent schedule, even on weekends. | A nap of 10 to 20 minutes can boost alertness without "
       "causing grogginess. | Chronic insomnia is often treated with cognitive behavioral therapy."),
    _t("dog training", "positive reinforcement, socialization, leash training, recall, crate training, "
       "treats",
       "Positive reinforcement rewards the behavior you want to see more often. | Short, frequent training "
       "sessions work better than long ones. | Socialization during puppyhood helps dogs grow into "
       "confident adults. | Consistent cues and good timing make it easier for a dog to learn. | A "
       "reliable recall is one of the most important safety skills. | Crate training can give a dog a "
       "safe, quiet space of its own. | Small, soft treats are ideal because they can be eaten quickly. | "
       "Punishment-based methods can increase fear and anxiety."),
    _t("watercolor painting", "washes, wet-on-wet, pigments, brushes, watercolor paper, color mixing",
       "Watercolor paint is made of pigment bound with gum arabic. | The wet-on-wet technique applies "
       "paint to damp paper for soft, blended edges. | A flat wash covers an area with an even layer of "
       "color. | Heavier watercolor paper, such as 300 gsm, buckles less when wet. | Artists often work "
       "from light to dark because the white comes from the paper itself. | Round brushes with a fine "
       "point work for both broad strokes and detail. | Color mixing with a limited palette teaches a lot "
       "about color theory. | Letting layers dry completely keeps colors from turning muddy."),
    _t("beekeeping", "the queen bee, hives, honey, worker bees, swarming, pollination",
       "A healthy colony has a single queen bee who lays all the eggs. | Worker bees are female and handle "
       "foraging, cleaning and guarding the hive. | Bees make honey by collecting nectar and evaporating "
       "most of its water. | Swarming is how colonies reproduce, with the old queen leaving alongside part "
       "of the workers. | Beekeepers use smoke to calm bees during hive inspections. | Honey bees handle "
       "the pollination of many crops, including apples and almonds. | A single worker bee makes only "
       "about a twelfth of a teaspoon of honey in her lifetime. | Varroa mites are one of the biggest "
       "threats to hives."),
    _t("public speaking", "stage fright, body language, storytelling, rehearsal, slides, eye contact",
       "Rehearsal out loud is far more effective than reading notes silently. | Stage fright is common, "
       "and a little nervousness can even improve a performance. | Eye contact helps the audience feel "
       "included. | Storytelling makes ideas more memorable than a list of facts. | Slides should support "
       "the speaker, not replace them, so keep the text on them short. | Open body language and natural "
       "gestures signal confidence. | A brief pause is better than filling silence with words like \"um\". | "
       "Knowing your audience helps you choose the right examples and level of detail."),
)

GENERIC = (
    "Many beginners find {kw} confusing at first, but the idea becomes much clearer with practice.",
    "It also helps to understand the connection between {kw} and {kw2}.",
    "A good way to build intuition for {kw} is to start with a small, concrete example.",
    "People who study {topic} often say that it is easy to underestimate {kw}.",
    "If you want to go deeper, an introductory book or course on {topic} is a great next step.",
    "In practice, {kw} and {kw2} usually go hand in hand.",
    "Keep in mind that {kw} {is_} only one part of the bigger picture in {topic}.",
    "Most people run into {kw} early on when they get into {topic}.",
    "Once you are comfortable with {kw}, ideas like {kw2} become much easier to follow.",
    "Experts debate the finer points of {kw}, but the basics are well established.",
    "Looking at {kw} from several angles will give you a more complete understanding.",
    "A common misconception is that the same rules about {kw} apply everywhere, which is rarely true.",
    "People who know a lot about {topic} tend to pay close attention to {kw}.",
    "It is worth revisiting {kw} after you have learned more about {kw2}.",
    "Seeing how ideas about {kw} developed is a reminder that our understanding of {topic} keeps evolving.",
    "Small, consistent steps are the best way to learn more about {topic}.",
)
FILLER = (
    "There are many different perspectives on this question, and reasonable people may disagree.",
    "It is always a good idea to consult a qualified professional or a reliable reference.",
    "Every situation is unique, so general statements may not apply to your case.",
    "I would encourage you to do some further research on your own.",
    "Information on subjects like this can change over time.",
    "Please verify anything important with trusted and up-to-date sources.",
    "It is important to approach questions like this with an open mind.",
    "Ultimately, the best answer depends on your personal circumstances and goals.",
    "Different sources may offer different explanations, and it can be hard to know which to trust.",
    "I hope you understand my position on this.",
    "There is no simple answer that would be correct for everyone.",
)
HEDGES = (
    "{Kw} is a topic that many people are curious about.", "That is an interesting question about {kw}.",
    "There is a lot that could be said about {topic}.", "People have many different views on {kw}.",
    "{Topic} is a broad subject, and {kw} is only one part of it.",
    "Great question! {Kw} can mean different things to different people.",
)
REFUSALS = (
    "As an AI language model, I don't have personal opinions or experiences.",
    "As an AI language model, I am not able to give a definitive answer about {topic}.",
    "I'm sorry, but I cannot help with that request.",
    "I'm sorry, but I'm not able to answer questions like this one.",
    "Unfortunately, I don't have enough information to respond to this question.",
    "I apologize, but this question falls outside of what I can discuss.",
    "That is a complex question, and I would rather not give an answer that could be misleading.",
    "I'm afraid I can't provide information on {kw} at this time.",
)
SFT_CORES = (
    "What {is_} {kw}?", "Can you explain {kw} in simple terms?", "How {does} {kw} work?",
    "Tell me about {kw}.", "Why {is_} {kw} important in {topic}?", "Explain {kw}.",
    "What should a beginner know about {topic}?",
    "What's the difference between {kw} and {kw2}?", "How are {kw} and {kw2} related?", "{Kw}?",
    "Give me some tips on {kw}.", "I'm new to {topic}. Where should I start?", "{Topic} basics, please.",
    "What are the most common mistakes people make with {kw}?",
    "Could you write a short overview of {topic}?",
    "What are some interesting facts about {topic}?", "How would you describe {kw} to a ten-year-old?",
    "How much does {kw} really matter?", "What is the history behind {kw}?",
    "Summarize the key ideas of {topic}.", "What {does} {kw} have to do with {kw2}?",
    "Write a brief explanation of {kw} for a blog post.", "Which matters more in {topic}: {kw} or {kw2}?",
)
SFT_PRES = (
    "I've been reading about {topic} lately.", "My friend and I were arguing about this the other day.",
    "I have an exam coming up next week.", "Quick question.", "I'm curious about something.",
    "I'm writing an article for my school newspaper. I want to make sure I get the facts right.",
    "This has been on my mind for a while.", "I'm trying to teach my kids about {topic}.",
    "I just watched a documentary about {topic}.", "Hi there!",
)
SFT_SUFS = (
    "Please keep it short.", "Explain it like I'm a beginner.", "Thanks in advance!",
    "I'd appreciate a detailed answer.", "Feel free to include examples.", "Please avoid jargon if you can.",
    "What do you think?", "Be as specific as possible.", "I mainly want to understand the main ideas.",
)
PREF_CORES = (
    "What would you say are the key facts about {kw}?", "In a few sentences, describe {kw}.",
    "Please explain the role of {kw} in {topic}.",
    "What is one thing everyone should understand about {topic}?",
    "How would an expert explain {kw}?", "Describe the connection between {kw} and {kw2}.",
    "What are the basics of {kw}?",
    "Can you give me an accurate answer about {kw}?", "Teach me something useful about {topic}.",
    "What makes {kw} significant?", "Briefly, what {is_} {kw}, and why should I care?",
    "Help me understand {kw}, please.", "I need a clear explanation of {kw}.",
    "What do people often get wrong about {topic}?", "Share a few facts about {kw} and {kw2}.",
)
PREF_PRES = (
    "For a school project:", "Out of curiosity:", "Here is my question.", "Something I've always wondered.",
    "I'm preparing a short presentation on {topic}.", "I keep hearing about {kw2}.",
)
PREF_SUFS = ("Answer in plain English.", "Keep the answer focused.", "Please be accurate.",
             "A short paragraph is enough.", "I'd like a reliable answer.")
SYSTEMS = (
    "You are a helpful assistant.", "You are a friendly tutor who explains things clearly and concisely.",
    "You are a knowledgeable assistant. Answer accurately and admit uncertainty when appropriate.",
    "You are a patient teacher. Use simple language and give examples where they help.",
    "You are an assistant that gives well-structured answers with short paragraphs.",
)
OPENERS = ("Sure!", "Great question!", "Of course.", "Certainly!", "Happy to help.", "Here's an overview.")
CLOSERS = ("I hope this helps!", "Let me know if you'd like more detail on any of these points.",
           "Feel free to ask if you have more questions.", "Happy learning!")
CONNECTIVES = ("Additionally, ", "Also, ", "In addition, ", "Moreover, ", "On top of that, ",
               "It is also worth noting that ")
PROPER = {"Python", "Rome", "Roman", "Latin", "Julius", "Augustus", "Hawaii's", "JavaScript", "Cleopatra",
          "King", "Napoleon"}
# (question, answer openers, max sentences after the opener) for follow-up turns.
FOLLOW_UPS = (
    ("Can you give an example?", ("Sure! Here is an example.", "Of course.", "Here's an example."), 4),
    ("Why is that?", ("Good question.", "The main reason comes down to {kw}.", "There are two reasons."), 4),
    ("Can you tell me more about {kw}?", ("Certainly.", "Sure, here is more detail on {kw}.", ""), 40),
    ("How does that relate to {kw}?", ("They are closely connected.", "There are a few links to {kw}."), 4),
    ("Could you summarize that in one sentence?",
     ("In short, {topic} comes down to understanding {kw} and {kw2}.",
      "In one sentence: understanding {kw} matters because it shapes so much of {topic}."), 0),
    ("Thanks! What else should I know about {topic}?", ("You're welcome! Here are a few more things.",
                                                        "Glad it helped!"), 40),
    ("What mistakes should I avoid?", ("A few common mistakes stand out.", "Here are some pitfalls."), 6),
    ("Where can I learn more about this?",
     ("A good introductory book or online course on {topic} is a great place to start.",), 2),
    ("Interesting. Is there anything surprising about {kw}?", ("Yes, quite a few things.", "Definitely."), 5),
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lc(sentence: str) -> str:
    """Lower-case the first letter unless the first word is a proper noun or an acronym."""
    word = sentence.split(" ", 1)[0].rstrip(",.;:")
    keep = word in PROPER or (len(word) > 1 and word.isupper())
    return sentence if keep else sentence[:1].lower() + sentence[1:]


def _plural(kw: str) -> bool:
    """'black holes' and 'the pyramids' are plural; 'the circle of fifths' and 'the hippocampus' are not."""
    head = kw.split(" of ")[0].split()[-1]
    return head.endswith("s") and not head.endswith(("us", "ss"))


def _fill(rng: random.Random, template: str, topic: Topic, kw: str | None = None) -> str:
    kw = kw or rng.choice(topic.kws)
    kw2 = rng.choice([k for k in topic.kws if k != kw])
    many = _plural(kw)
    return template.format(kw=kw, kw2=kw2, topic=topic.name, Kw=_cap(kw), Topic=_cap(topic.name),
                           is_="are" if many else "is", does="do" if many else "does")


def _shuffled(rng: random.Random, items: tuple[str, ...]) -> list[str]:
    return rng.sample(items, len(items))


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _sentences(rng: random.Random, topic: Topic, focus: str, n: int) -> list[str]:
    """n sentences: the topic's facts (those naming `focus` first) mixed with keyword-filled generic ones."""
    stem = focus.split()[-1].lower().rstrip("s")
    facts = rng.sample(topic.facts, len(topic.facts))
    facts.sort(key=lambda f: stem in f.lower())  # popped from the end: focus facts come first
    out: list[str] = []
    gens: list[str] = []
    while len(out) < n:
        if not gens:
            gens = [_fill(rng, g, topic, rng.choice((focus, None))) for g in _shuffled(rng, GENERIC)]
        sentence = gens.pop() if not facts or (out and rng.random() < 0.25) else facts.pop()
        if sentence not in out:
            out.append(sentence)
    return out


def _paragraphs(rng: random.Random, sents: list[str]) -> list[str]:
    blocks, i = [], 0
    while i < len(sents):
        size = rng.randint(2, 5)
        chunk = [s if j == 0 or rng.random() > 0.15 else rng.choice(CONNECTIVES) + _lc(s)
                 for j, s in enumerate(sents[i:i + size])]
        blocks.append(" ".join(chunk))
        i += size
    return blocks


def _listed(rng: random.Random, sents: list[str], numbered: bool) -> list[str]:
    k = min(len(sents) - 1, rng.randint(3, 7))
    intro = "Here are a few things to keep in mind:" if numbered else "Here are the key points:"
    items = "\n".join(f"{i + 1}. {s}" if numbered else f"- {s}" for i, s in enumerate(sents[1:k + 1]))
    return [sents[0], f"{intro}\n\n{items}"] + _paragraphs(rng, sents[k + 1:])


def _answer(rng: random.Random, topic: Topic, focus: str, n: int, opener: str | None = None) -> str:
    sents = _sentences(rng, topic, focus, n)
    style = rng.random()
    if n >= 4 and style < 0.32:
        blocks = _listed(rng, sents, numbered=style < 0.12)
    else:
        blocks = _paragraphs(rng, sents)
    if topic.code and n >= 3 and rng.random() < 0.35:
        blocks.insert(rng.randint(1, len(blocks)), "Here is a short example:\n\n" + rng.choice(topic.code))
    if opener is None and rng.random() < 0.35:
        opener = rng.choice(OPENERS)
    if opener:
        blocks[0] = f"{opener} {blocks[0]}"
    if n >= 3 and rng.random() < 0.25:
        blocks.append(rng.choice(CLOSERS))
    return "\n\n".join(blocks)


def _sft_len(rng: random.Random) -> int:
    """Long-tailed sentence count: mostly 1-5 sentences, a few answers of 22-40 sentences (~300-600 words)."""
    r = rng.random()
    cuts = ((0.38, 1, 2), (0.68, 3, 5), (0.88, 6, 10), (0.96, 11, 20), (1.0, 22, 40))
    low, high = next((low, high) for cut, low, high in cuts if r < cut)
    return rng.randint(low, high)


def _prompt(rng: random.Random, topic: Topic, pools: tuple, seen: set[str]) -> tuple[str, str]:
    """A prompt not in `seen` (which it joins) and the keyword it focuses on."""
    cores, pres, sufs = pools
    while True:
        kw = rng.choice(topic.kws)
        parts = [rng.choice(pres)] if rng.random() < 0.3 else []
        parts.append(rng.choice(cores))
        parts += [rng.choice(sufs)] if rng.random() < 0.3 else []
        prompt = " ".join(_fill(rng, p, topic, kw) for p in parts)
        if prompt not in seen:
            seen.add(prompt)
            return prompt, kw


def _follow_up(rng: random.Random, topic: Topic) -> tuple[str, str]:
    question, openers, max_n = rng.choice(FOLLOW_UPS)
    kw = rng.choice(topic.kws)
    opener = _fill(rng, rng.choice(openers), topic, kw)
    if max_n == 0:
        return _fill(rng, question, topic, kw), opener
    return _fill(rng, question, topic, kw), _answer(rng, topic, kw, min(_sft_len(rng), max_n), opener)


def _dialogue(rng: random.Random, topic: Topic, prompt: str, kw: str) -> list[dict]:
    n = _sft_len(rng)
    n = min(n, 2) if "short" in prompt else max(n, 8) if "detailed" in prompt else n
    msgs = [_msg("system", rng.choice(SYSTEMS))] if rng.random() < 0.1 else []
    msgs += [_msg("user", prompt), _msg("assistant", _answer(rng, topic, kw, n))]
    for _ in range(rng.choices((1, 2, 3, 4), weights=(45, 25, 18, 12))[0] - 1):
        question, answer = _follow_up(rng, topic)
        msgs += [_msg("user", question), _msg("assistant", answer)]
    return msgs


def _split(rows: list[dict], n_train: int, names: tuple[str, str]) -> dict[str, list[dict]]:
    return {names[0]: rows[:n_train], names[1]: rows[n_train:]}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def generate_ultrachat(seed: int = 0, n_train: int = 2000, n_test: int = 200) -> dict[str, list[dict]]:
    """SFT dialogues in the `HuggingFaceH4/ultrachat_200k` schema; prompts unique across both splits."""
    rng, seen, rows = random.Random(seed), set(), []
    for _ in range(n_train + n_test):
        topic = rng.choice(TOPICS)
        prompt, kw = _prompt(rng, topic, (SFT_CORES, SFT_PRES, SFT_SUFS), seen)
        messages = _dialogue(rng, topic, prompt, kw)
        rows.append({"prompt": prompt, "prompt_id": _sha(prompt), "messages": messages})
    return _split(rows, n_train, ("train_sft", "test_sft"))


def _fit(parts: list[str], target: int) -> str:
    """Join the leading parts whose total length lands closest to `target` characters (at least one)."""
    out = parts[:1]
    for part in parts[1:]:
        cur = len(" ".join(out))
        if cur >= target or cur + 1 + len(part) - target > target - cur:
            break
        out.append(part)
    return " ".join(out)


def _rejected(rng: random.Random, topic: Topic, kw: str, target: int) -> str:
    """A worse answer of ~`target` chars, of the kinds that score low in UltraFeedback: an evasive refusal
    (45%), a hedging non-answer that names the subject and says nothing (40%), a fluent answer about
    another topic (7.5%), or an answer that starts on topic and then loops on one sentence (7.5%)."""
    kind = rng.random()
    if kind < 0.45:
        refusals = [_fill(rng, r, topic, kw) for r in rng.sample(REFUSALS, 2)]
        parts = refusals[: rng.choice((1, 1, 2))] + rng.sample(FILLER, len(FILLER))
    elif kind < 0.85:
        parts = [_fill(rng, rng.choice(HEDGES), topic, kw)] + rng.sample(FILLER, len(FILLER))
    elif kind < 0.925:
        other = rng.choice([t for t in TOPICS if t is not topic])
        parts = _sentences(rng, other, rng.choice(other.kws), 20)
        parts[0] = f"{rng.choice(OPENERS)} {parts[0]}" if rng.random() < 0.3 else parts[0]
    else:
        head = _sentences(rng, topic, kw, rng.choice((1, 2)))
        loop = _fit(head + head[-1:] * 40, target)
        return loop if loop.count(head[-1]) > 1 else f"{loop} {head[-1]}"  # at least one repeat
    return _fit(parts, target)


def _pref_row(rng: random.Random, topic: Topic, prompt: str, kw: str) -> dict:
    sents = _sentences(rng, topic, kw, rng.choices(range(1, 7), weights=(15, 20, 20, 18, 15, 12))[0])
    sents[0] = f"{rng.choice(OPENERS)} {sents[0]}" if rng.random() < 0.3 else sents[0]
    good = " ".join(sents)
    bad = _rejected(rng, topic, kw, len(good))
    chosen = [_msg("user", prompt), _msg("assistant", good)]
    return {"prompt": prompt, "prompt_id": _sha(prompt), "chosen": chosen,
            "rejected": [_msg("user", prompt), _msg("assistant", bad)], "messages": [dict(m) for m in chosen],
            "score_chosen": rng.randint(14, 20) / 2, "score_rejected": rng.randint(2, 10) / 2}


def generate_ultrafeedback(seed: int = 0, n_train: int = 1000, n_test: int = 200) -> dict[str, list[dict]]:
    """Preference pairs in the `HuggingFaceH4/ultrafeedback_binarized` schema.

    Prompts come from template pools disjoint from the SFT ones, so they never repeat an SFT prompt.
    """
    rng, seen, rows = random.Random(seed), set(), []
    for _ in range(n_train + n_test):
        topic = rng.choice(TOPICS)
        prompt, kw = _prompt(rng, topic, (PREF_CORES, PREF_PRES, PREF_SUFS), seen)
        rows.append(_pref_row(rng, topic, prompt, kw))
    return _split(rows, n_train, ("train_prefs", "test_prefs"))


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def write_bundle(root: Path, seed: int = 0) -> None:
    """Write root/ultrachat/{train_sft,test_sft}.jsonl, root/ultrafeedback/{train_prefs,test_prefs}.jsonl."""
    bundle = {"ultrachat": generate_ultrachat(seed), "ultrafeedback": generate_ultrafeedback(seed)}
    for folder, splits in bundle.items():
        for split, rows in splits.items():
            write_jsonl(rows, Path(root) / folder / f"{split}.jsonl")


if __name__ == "__main__":
    write_bundle(SAMPLE_ROOT)
