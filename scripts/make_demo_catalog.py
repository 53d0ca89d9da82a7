"""Write Parley's demo catalog (parley/data/demo_catalog.csv): invented brands and products.

Deterministic: run it again and the same file comes out. ``python scripts/make_demo_catalog.py``
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "parley" / "data" / "demo_catalog.csv"

# category -> list of (code, product type, price range, [(variant name, brand, detail, features)]);
# a variant may end with its own price range, where its type's is too wide for it (a foam roller
# is not priced like an exercise bike)
Variant = tuple[str, str, str, str] | tuple[str, str, str, str, tuple[int, int]]
CATALOG: dict[str, list[tuple[str, str, tuple[int, int], list[Variant]]]] = {
    "electronics": [
        (
            "AUD",
            "wireless headphones",
            (59, 349),
            [
                (
                    "Aurora ANC",
                    "Lumen Audio",
                    "over-ear headphones with active noise cancelling and 30-hour battery",
                    "bluetooth 5.3|active noise cancelling|30 h battery|fold-flat",
                ),
                (
                    "Aurora Lite",
                    "Lumen Audio",
                    "lightweight on-ear headphones for commuting, 40-hour battery",
                    "bluetooth 5.2|40 h battery|multipoint pairing",
                ),
                (
                    "Tidal Studio",
                    "Northwave",
                    "closed-back studio headphones with detachable cable and wireless mode",
                    "wired and wireless|40 mm drivers|detachable cable",
                ),
                (
                    "Quietline Pro",
                    "Sable",
                    "premium noise cancelling headphones with adaptive transparency mode",
                    "adaptive ANC|transparency mode|USB-C fast charge",
                ),
                (
                    "Kid Safe Mini",
                    "Pebble",
                    "volume-limited wireless headphones for children",
                    "85 dB limit|soft ear cushions|20 h battery",
                ),
            ],
        ),
        (
            "EAR",
            "wireless earbuds",
            (29, 249),
            [
                (
                    "Aurora Buds",
                    "Lumen Audio",
                    "true wireless earbuds with noise cancelling and a pocket charging case",
                    "ANC|IPX4|24 h with case",
                ),
                (
                    "Sprint Fit",
                    "Northwave",
                    "sports earbuds with ear hooks that stay in while running",
                    "ear hooks|IPX7 sweatproof|9 h battery",
                ),
                (
                    "Pebble Pods",
                    "Pebble",
                    "budget true wireless earbuds with touch controls",
                    "touch controls|20 h with case",
                ),
                (
                    "Quietline Buds",
                    "Sable",
                    "premium earbuds with spatial audio and wireless charging",
                    "spatial audio|wireless charging|ANC",
                ),
            ],
        ),
        (
            "SPK",
            "bluetooth speaker",
            (35, 299),
            [
                (
                    "Boom Cube",
                    "Northwave",
                    "portable waterproof speaker that floats, 12-hour battery",
                    "IP67|floats|12 h battery",
                ),
                (
                    "Hearth 360",
                    "Lumen Audio",
                    "room-filling 360-degree home speaker with deep bass",
                    "360 sound|wifi and bluetooth|voice assistant",
                ),
                (
                    "Trail Clip",
                    "Pebble",
                    "palm-sized speaker with a carabiner for hiking",
                    "carabiner|IP66|8 h battery",
                ),
                (
                    "Soundbar 2.1",
                    "Sable",
                    "TV soundbar with wireless subwoofer and dialogue mode",
                    "wireless subwoofer|HDMI eARC|dialogue mode",
                ),
            ],
        ),
        (
            "KEY",
            "keyboard",
            (25, 219),
            [
                (
                    "Forge TKL Mechanical Keyboard",
                    "Keystone",
                    "tenkeyless mechanical keyboard with hot-swappable brown switches",
                    "hot-swap|brown tactile switches|PBT keycaps|USB-C",
                ),
                (
                    "Forge 75 Wireless Keyboard",
                    "Keystone",
                    "compact 75% wireless mechanical keyboard with a volume knob",
                    "bluetooth and 2.4 GHz|gasket mount|volume knob",
                ),
                (
                    "Slim Office Keyboard",
                    "Deskline",
                    "quiet low-profile keyboard with a numeric keypad",
                    "scissor switches|numeric keypad|quiet typing",
                ),
                (
                    "Ergo Split Keyboard",
                    "Deskline",
                    "split ergonomic keyboard with palm rest to reduce wrist strain",
                    "split layout|palm rest|tenting feet",
                ),
                (
                    "Travel Fold Keyboard",
                    "Pebble",
                    "foldable bluetooth keyboard for tablets and phones",
                    "folds in half|3 devices|bluetooth",
                ),
            ],
        ),
        (
            "MOU",
            "mouse",
            (15, 129),
            [
                (
                    "Glide Wireless Mouse",
                    "Deskline",
                    "silent wireless mouse with a 2-year battery",
                    "silent clicks|2.4 GHz receiver|2 year battery",
                ),
                (
                    "Vertical Ergo Mouse",
                    "Deskline",
                    "vertical mouse that keeps your wrist in a handshake position",
                    "57 degree grip|6 buttons|rechargeable",
                ),
                (
                    "Strike Gaming Mouse",
                    "Keystone",
                    "ultra-light gaming mouse with 26k DPI sensor",
                    "58 g|26000 DPI|PTFE feet",
                ),
                (
                    "Pocket Travel Mouse",
                    "Pebble",
                    "compact bluetooth mouse for laptops on the go",
                    "bluetooth|compact|AAA battery",
                ),
            ],
        ),
        (
            "MON",
            "monitor",
            (129, 899),
            [
                (
                    "Vista 27 QHD Monitor",
                    "Clearview",
                    "27-inch 1440p IPS monitor with USB-C power delivery",
                    "2560x1440|IPS|USB-C 65 W",
                ),
                (
                    "Vista 32 4K Monitor",
                    "Clearview",
                    "32-inch 4K monitor for photo and video work",
                    "3840x2160|98% DCI-P3|HDR400",
                ),
                (
                    "Arc 34 Ultrawide Monitor",
                    "Clearview",
                    "curved 34-inch ultrawide for multitasking and games",
                    "3440x1440|144 Hz|1500R curve",
                ),
                (
                    "Portable 15 Monitor",
                    "Pebble",
                    "15.6-inch portable USB-C screen for a second display on the go",
                    "1080p|USB-C|kickstand cover",
                ),
            ],
        ),
        (
            "ACC",
            "computer accessory",
            (12, 189),
            [
                (
                    "7-in-1 USB-C Hub",
                    "Deskline",
                    "USB-C hub with HDMI, SD card reader and 100 W passthrough",
                    "4K HDMI|SD and microSD|100 W PD",
                ),
                (
                    "HD Pro Webcam",
                    "Clearview",
                    "1080p webcam with autofocus and dual microphones",
                    "1080p 60 fps|autofocus|privacy shutter",
                ),
                (
                    "Power Bank 20000",
                    "Pebble",
                    "20,000 mAh power bank that charges a laptop",
                    "20000 mAh|65 W USB-C|2 ports",
                ),
                (
                    "Laptop Stand Aluminium",
                    "Deskline",
                    "adjustable aluminium laptop stand for better posture",
                    "6 heights|aluminium|foldable",
                ),
                (
                    "Desk Mat XL",
                    "Keystone",
                    "extra-large stitched desk mat for keyboard and mouse",
                    "90x40 cm|stitched edges|water resistant",
                ),
            ],
        ),
        (
            "WEA",
            "smartwatch",
            (49, 399),
            [
                (
                    "Pulse Fit Band",
                    "Pebble",
                    "fitness band with heart rate and sleep tracking",
                    "heart rate|sleep tracking|14 day battery",
                ),
                (
                    "Pulse Watch 2",
                    "Sable",
                    "smartwatch with GPS, contactless payments and AMOLED display",
                    "GPS|AMOLED|NFC payments",
                ),
                (
                    "Trail Watch Pro",
                    "Northwave",
                    "rugged outdoor GPS watch with maps and 3-week battery",
                    "offline maps|3 week battery|barometer",
                ),
            ],
        ),
    ],
    "clothing": [
        (
            "JKT",
            "jacket",
            (49, 329),
            [
                (
                    "Stormline Rain Jacket",
                    "Fjellby",
                    "waterproof breathable rain jacket with taped seams",
                    "waterproof 20k|taped seams|packable hood",
                ),
                (
                    "Downy Puffer Jacket",
                    "Fjellby",
                    "lightweight down puffer jacket for cold city days",
                    "700 fill down|packs into pocket",
                ),
                (
                    "Denim Trucker Jacket",
                    "Mill & Loom",
                    "classic denim jacket in rigid cotton",
                    "100% cotton|button front",
                ),
                (
                    "Softshell Hiking Jacket",
                    "Ridgeway",
                    "stretchy windproof softshell for hiking",
                    "windproof|4-way stretch|DWR finish",
                ),
                (
                    "Fleece Zip Jacket",
                    "Ridgeway",
                    "warm recycled fleece jacket with full zip",
                    "recycled polyester|full zip|zip pockets",
                ),
            ],
        ),
        (
            "TOP",
            "shirt",
            (15, 89),
            [
                (
                    "Everyday Cotton T-Shirt",
                    "Mill & Loom",
                    "soft organic cotton crew-neck t-shirt",
                    "organic cotton|crew neck|regular fit",
                ),
                (
                    "Merino Base Layer",
                    "Ridgeway",
                    "merino wool long-sleeve base layer that resists odour",
                    "merino wool|odour resistant|long sleeve",
                ),
                (
                    "Oxford Button-Down Shirt",
                    "Mill & Loom",
                    "oxford cotton shirt for work and weekends",
                    "oxford cotton|button-down collar",
                ),
                (
                    "Linen Summer Shirt",
                    "Mill & Loom",
                    "breathable linen shirt for hot days",
                    "100% linen|relaxed fit",
                ),
                (
                    "Running Tech Tee",
                    "Stride",
                    "quick-dry running t-shirt with reflective details",
                    "quick dry|reflective|mesh panels",
                ),
            ],
        ),
        (
            "PNT",
            "trousers",
            (29, 129),
            [
                (
                    "Slim Stretch Chinos",
                    "Mill & Loom",
                    "slim-fit chinos with a little stretch",
                    "cotton stretch|slim fit",
                ),
                (
                    "Trail Convertible Pants",
                    "Ridgeway",
                    "hiking trousers that zip off into shorts",
                    "zip-off legs|quick dry|UPF 50",
                ),
                (
                    "Straight Leg Jeans",
                    "Mill & Loom",
                    "straight-leg jeans in mid-wash denim",
                    "mid wash|straight leg|5 pockets",
                ),
                (
                    "Jogger Sweatpants",
                    "Stride",
                    "soft fleece-back joggers with cuffed ankles",
                    "fleece back|cuffed|drawstring",
                ),
            ],
        ),
        (
            "SHO",
            "shoes",
            (39, 189),
            [
                (
                    "Cloudrun Running Shoes",
                    "Stride",
                    "cushioned road running shoes for daily miles",
                    "cushioned|breathable mesh|8 mm drop",
                ),
                (
                    "Trailgrip Trail Shoes",
                    "Stride",
                    "trail running shoes with a lugged sole and rock plate",
                    "4 mm lugs|rock plate|gusseted tongue",
                ),
                (
                    "Canvas Low Sneakers",
                    "Mill & Loom",
                    "classic canvas sneakers with rubber sole",
                    "canvas|vulcanised rubber sole",
                ),
                (
                    "Summit Hiking Boots",
                    "Ridgeway",
                    "waterproof leather hiking boots with ankle support",
                    "waterproof membrane|leather|Vibram-style sole",
                ),
                (
                    "Leather Chelsea Boots",
                    "Mill & Loom",
                    "smooth leather chelsea boots with elastic sides",
                    "full-grain leather|elastic gussets",
                ),
            ],
        ),
        (
            "KNT",
            "knitwear and accessories",
            (12, 119),
            [
                (
                    "Lambswool Crew Sweater",
                    "Mill & Loom",
                    "warm lambswool sweater in a classic crew neck",
                    "lambswool|ribbed cuffs",
                ),
                (
                    "Chunky Knit Beanie",
                    "Fjellby",
                    "chunky knit beanie hat with fleece lining",
                    "fleece lined|one size",
                ),
                (
                    "Cashmere Scarf",
                    "Mill & Loom",
                    "soft cashmere scarf in heather grey",
                    "100% cashmere|180 cm",
                ),
                (
                    "Touchscreen Gloves",
                    "Fjellby",
                    "knit gloves with touchscreen fingertips",
                    "touchscreen tips|grip palm",
                ),
            ],
        ),
    ],
    "home": [
        (
            "KIT",
            "kitchen appliance",
            (25, 449),
            [
                (
                    "Brewmaster Drip Coffee Maker",
                    "Hearthstone",
                    "12-cup programmable drip coffee maker with thermal carafe",
                    "12 cups|thermal carafe|timer",
                ),
                (
                    "Espresso Compact Machine",
                    "Hearthstone",
                    "15-bar espresso machine with milk frother",
                    "15 bar|steam wand|removable tank",
                ),
                (
                    "Burr Coffee Grinder",
                    "Hearthstone",
                    "conical burr grinder with 40 grind settings",
                    "conical burr|40 settings",
                    (49, 249),
                ),
                (
                    "Crisp Air Fryer 5L",
                    "Kitchenly",
                    "5-litre air fryer that cooks with little or no oil",
                    "5 L|8 presets|dishwasher-safe basket",
                ),
                (
                    "Power Blender 1200",
                    "Kitchenly",
                    "1200 W blender for smoothies and soups",
                    "1200 W|1.8 L jug|pulse",
                ),
                (
                    "Rapid Boil Kettle",
                    "Kitchenly",
                    "1.7 L electric kettle with temperature control",
                    "temperature presets|keep warm|1.7 L",
                    (25, 99),
                ),
            ],
        ),
        (
            "CKW",
            "cookware",
            (19, 259),
            [
                (
                    "Cast Iron Skillet 26 cm",
                    "Ironwood",
                    "pre-seasoned cast iron skillet for searing and baking",
                    "pre-seasoned|oven safe|26 cm",
                ),
                (
                    "Nonstick Pan Set",
                    "Kitchenly",
                    "three nonstick frying pans, PFOA-free",
                    "20/24/28 cm|induction ready|PFOA-free",
                ),
                (
                    "Stainless Stock Pot 8L",
                    "Ironwood",
                    "8-litre stainless steel stock pot with lid",
                    "8 L|tri-ply base|glass lid",
                ),
                (
                    "Chef Knife 20 cm",
                    "Ironwood",
                    "forged German steel chef's knife",
                    "forged steel|full tang|20 cm blade",
                ),
                (
                    "Bamboo Cutting Board Set",
                    "Kitchenly",
                    "three bamboo cutting boards with juice grooves",
                    "3 sizes|juice groove|bamboo",
                ),
            ],
        ),
        (
            "FRN",
            "furniture",
            (49, 899),
            [
                (
                    "Oslo Three-Seat Sofa",
                    "Nordhus",
                    "three-seat sofa with removable washable covers",
                    "washable covers|oak legs|3 seats",
                ),
                (
                    "Linnea Armchair",
                    "Nordhus",
                    "compact armchair with curved back in boucle fabric",
                    "boucle|solid wood legs",
                ),
                (
                    "Sit-Stand Desk",
                    "Deskline",
                    "electric height-adjustable standing desk with memory presets",
                    "electric lift|4 memory presets|140x70 cm",
                ),
                (
                    "Ergo Task Chair",
                    "Deskline",
                    "ergonomic office chair with lumbar support and mesh back",
                    "adjustable lumbar|mesh back|4D armrests",
                ),
                (
                    "Oak Bookshelf",
                    "Nordhus",
                    "five-shelf bookcase in oak veneer",
                    "5 shelves|oak veneer|wall anchor",
                ),
                (
                    "Nesting Side Tables",
                    "Nordhus",
                    "set of two nesting side tables",
                    "set of 2|powder-coated steel",
                ),
            ],
        ),
        (
            "BED",
            "bedding",
            (19, 349),
            [
                (
                    "Cloud Memory Foam Pillow",
                    "Dreamly",
                    "memory foam pillow with cooling cover",
                    "memory foam|cooling cover|washable",
                ),
                (
                    "Percale Duvet Cover Set",
                    "Dreamly",
                    "crisp cotton percale duvet cover with two pillowcases",
                    "cotton percale|double and king",
                ),
                (
                    "All-Season Duvet",
                    "Dreamly",
                    "medium-weight duvet for all seasons",
                    "10.5 tog|hypoallergenic",
                ),
                (
                    "Weighted Blanket 7 kg",
                    "Dreamly",
                    "7 kg weighted blanket for calmer sleep",
                    "7 kg|glass beads|removable cover",
                ),
            ],
        ),
        (
            "LGT",
            "lighting and decor",
            (12, 199),
            [
                (
                    "Arc Floor Lamp",
                    "Nordhus",
                    "arched floor lamp with marble base",
                    "marble base|E27|dimmable",
                ),
                (
                    "Smart LED Bulb 4-Pack",
                    "Lumen Home",
                    "colour smart bulbs that work with voice assistants",
                    "16M colours|app control|4 pack",
                ),
                (
                    "Linen Table Lamp",
                    "Nordhus",
                    "ceramic table lamp with linen shade",
                    "ceramic base|linen shade",
                ),
                (
                    "Round Wall Mirror 60 cm",
                    "Nordhus",
                    "round mirror with thin brass frame",
                    "60 cm|brass frame",
                ),
                (
                    "Wool Area Rug 160x230",
                    "Nordhus",
                    "hand-tufted wool rug in oatmeal",
                    "wool|160x230 cm|hand tufted",
                ),
            ],
        ),
        (
            "CLN",
            "cleaning",
            (15, 499),
            [
                (
                    "Robot Vacuum S7",
                    "Tidy",
                    "robot vacuum with lidar mapping and auto-empty dock",
                    "lidar mapping|auto-empty|app control",
                ),
                (
                    "Cordless Stick Vacuum",
                    "Tidy",
                    "lightweight cordless vacuum with 45-minute runtime",
                    "45 min|HEPA filter|wall mount",
                ),
                (
                    "Steam Mop",
                    "Tidy",
                    "steam mop that cleans floors without chemicals",
                    "steam|2 pads|ready in 30 s",
                ),
                (
                    "HEPA Air Purifier",
                    "Tidy",
                    "air purifier with true HEPA filter for rooms up to 40 m²",
                    "true HEPA|40 m²|night mode",
                ),
            ],
        ),
    ],
    "books": [
        (
            "BKF",
            "novel",
            (9, 29),
            [
                (
                    "The Lighthouse Keeper's Daughter",
                    "Harbor Press",
                    "a quiet literary novel about grief and a remote island",
                    "paperback|352 pages",
                ),
                (
                    "Salt and Iron",
                    "Harbor Press",
                    "epic fantasy about a smuggler who steals a god's crown",
                    "hardcover|560 pages",
                ),
                (
                    "The Quiet Orbit",
                    "Meridian Books",
                    "science fiction about the last crew of a generation ship",
                    "paperback|410 pages",
                ),
                (
                    "Murder at Millbrook Station",
                    "Meridian Books",
                    "a cosy mystery set on a village railway",
                    "paperback|298 pages",
                ),
                (
                    "Glass Cities",
                    "Harbor Press",
                    "near-future thriller about a city run by algorithms",
                    "hardcover|384 pages",
                ),
                (
                    "Summer of the Fig Tree",
                    "Meridian Books",
                    "a warm coming-of-age story in a Greek village",
                    "paperback|320 pages",
                ),
            ],
        ),
        (
            "BKN",
            "non-fiction book",
            (12, 45),
            [
                (
                    "Deep Work Habits",
                    "Brightleaf",
                    "a practical guide to focus in a distracted world",
                    "paperback|256 pages",
                ),
                (
                    "The Bread Book",
                    "Brightleaf",
                    "sourdough and yeasted breads, step by step with photos",
                    "hardcover|288 pages|photos",
                ),
                (
                    "A Short History of Maps",
                    "Atlas House",
                    "how maps shaped empires, science and everyday life",
                    "hardcover|336 pages",
                ),
                (
                    "Run Your First Marathon",
                    "Brightleaf",
                    "an 18-week training plan for beginners",
                    "paperback|224 pages|training plans",
                ),
                (
                    "The Curious Garden",
                    "Atlas House",
                    "growing vegetables in small spaces and balconies",
                    "paperback|240 pages",
                ),
                (
                    "Money Without Fear",
                    "Brightleaf",
                    "personal finance basics: budgets, index funds and debt",
                    "paperback|272 pages",
                ),
            ],
        ),
        (
            "BKT",
            "technology book",
            (25, 69),
            [
                (
                    "Python from Scratch",
                    "Byteworks",
                    "learn programming with Python 3, exercises included",
                    "paperback|480 pages|exercises",
                ),
                (
                    "Designing Data Systems",
                    "Byteworks",
                    "databases, replication and streams explained for engineers",
                    "paperback|560 pages",
                ),
                (
                    "Practical Machine Learning",
                    "Byteworks",
                    "hands-on machine learning with real datasets",
                    "paperback|512 pages",
                ),
                (
                    "The Web Performance Handbook",
                    "Byteworks",
                    "make websites fast: caching, images and rendering",
                    "paperback|320 pages",
                ),
            ],
        ),
        (
            "BKK",
            "children's book",
            (6, 24),
            [
                (
                    "Otto the Sleepy Otter",
                    "Little Lantern",
                    "a bedtime picture book for ages 2 to 5",
                    "board book|24 pages",
                ),
                (
                    "The Dragon Who Loved Pancakes",
                    "Little Lantern",
                    "a funny picture book for ages 4 to 7",
                    "hardcover|32 pages",
                ),
                (
                    "Space Explorers Atlas",
                    "Little Lantern",
                    "an illustrated atlas of the solar system for ages 7 to 10",
                    "hardcover|64 pages",
                ),
                (
                    "Mystery of the Missing Map",
                    "Little Lantern",
                    "a chapter-book adventure for ages 8 to 11",
                    "paperback|160 pages",
                ),
            ],
        ),
    ],
    "sports": [
        (
            "FIT",
            "fitness equipment",
            (15, 599),
            [
                (
                    "Adjustable Dumbbells 24 kg",
                    "Ironpulse",
                    "pair of adjustable dumbbells from 2.5 to 24 kg",
                    "2.5-24 kg|quick dial|pair",
                    (149, 399),
                ),
                (
                    "Yoga Mat Pro 6 mm",
                    "Flowform",
                    "non-slip 6 mm yoga mat with alignment lines",
                    "6 mm|non-slip|alignment lines",
                    (25, 89),
                ),
                (
                    "Resistance Band Set",
                    "Flowform",
                    "five latex-free resistance bands with door anchor",
                    "5 levels|door anchor|carry bag",
                    (15, 45),
                ),
                (
                    "Foldable Exercise Bike",
                    "Ironpulse",
                    "magnetic exercise bike that folds away",
                    "8 resistance levels|foldable|heart rate grips",
                    (249, 599),
                ),
                (
                    "Kettlebell 16 kg",
                    "Ironpulse",
                    "cast iron kettlebell with wide handle",
                    "16 kg|cast iron|flat base",
                    (35, 99),
                ),
                (
                    "Foam Roller",
                    "Flowform",
                    "firm foam roller for recovery and mobility",
                    "45 cm|textured|firm",
                    (15, 49),
                ),
            ],
        ),
        (
            "OUT",
            "camping gear",
            (19, 499),
            [
                (
                    "Ridge 2 Backpacking Tent",
                    "Ridgeway",
                    "two-person lightweight backpacking tent, 1.6 kg",
                    "2 person|1.6 kg|3 season",
                    (149, 499),
                ),
                (
                    "Alpine Sleeping Bag -5",
                    "Ridgeway",
                    "mummy sleeping bag rated to -5 °C",
                    "-5 °C comfort|synthetic fill|compression sack",
                    (69, 249),
                ),
                (
                    "Trek 45 Backpack",
                    "Fjellby",
                    "45-litre hiking backpack with rain cover",
                    "45 L|rain cover|hip belt",
                    (79, 229),
                ),
                (
                    "Camp Stove Mini",
                    "Ridgeway",
                    "compact gas camping stove with piezo ignition",
                    "piezo ignition|folds small",
                    (25, 79),
                ),
                (
                    "Headlamp 400",
                    "Northwave",
                    "rechargeable 400-lumen headlamp with red light",
                    "400 lumens|USB-C|red mode",
                    (25, 69),
                ),
                (
                    "Insulated Water Bottle 750 ml",
                    "Fjellby",
                    "stainless steel bottle that keeps drinks cold 24 h",
                    "750 ml|24 h cold|leakproof",
                    (19, 45),
                ),
            ],
        ),
        (
            "CYC",
            "cycling gear",
            (15, 899),
            [
                (
                    "Commuter Bike Helmet",
                    "Velo",
                    "urban bike helmet with rear light",
                    "integrated light|MIPS-style liner",
                    (49, 149),
                ),
                (
                    "Bike Light Set",
                    "Velo",
                    "rechargeable front and rear bike lights",
                    "800 lumen front|USB-C|IPX5",
                    (25, 89),
                ),
                (
                    "Gravel Bike GR1",
                    "Velo",
                    "aluminium gravel bike with 2x10 gearing and disc brakes",
                    "aluminium frame|disc brakes|700c",
                    (799, 1899),
                ),
                (
                    "Bike Floor Pump",
                    "Velo",
                    "floor pump with gauge for Presta and Schrader valves",
                    "160 psi|gauge|dual head",
                    (25, 69),
                ),
            ],
        ),
        (
            "BAL",
            "ball sports",
            (9, 149),
            [
                (
                    "Match Football Size 5",
                    "Strikeline",
                    "FIFA-quality thermo-bonded match football",
                    "size 5|thermo bonded",
                ),
                (
                    "Indoor Basketball",
                    "Strikeline",
                    "composite leather basketball for indoor courts",
                    "size 7|composite leather",
                ),
                (
                    "Tennis Racket Pro 100",
                    "Strikeline",
                    "100 sq in tennis racket for intermediate players",
                    "300 g|100 sq in|strung",
                ),
                (
                    "Pickleball Paddle Set",
                    "Strikeline",
                    "two paddles and four balls for pickleball",
                    "2 paddles|4 balls|carry bag",
                ),
            ],
        ),
    ],
    "beauty": [
        (
            "SKN",
            "skincare",
            (8, 79),
            [
                (
                    "Gentle Foaming Cleanser",
                    "Verdant",
                    "soap-free face cleanser for sensitive skin",
                    "fragrance free|150 ml|pH balanced",
                ),
                (
                    "Hydra Daily Moisturiser",
                    "Verdant",
                    "lightweight moisturiser with hyaluronic acid",
                    "hyaluronic acid|50 ml|non-greasy",
                ),
                (
                    "Mineral Sunscreen SPF 50",
                    "Solace",
                    "broad-spectrum mineral sunscreen, no white cast",
                    "SPF 50|zinc oxide|reef friendly",
                ),
                ("Vitamin C Serum", "Solace", "brightening serum with 15% vitamin C", "15% vitamin C|30 ml"),
                (
                    "Retinol Night Cream",
                    "Solace",
                    "gentle retinol night cream for smoother skin",
                    "0.3% retinol|50 ml",
                ),
                (
                    "Lip Balm Trio",
                    "Verdant",
                    "three nourishing lip balms with shea butter",
                    "shea butter|3 pack",
                ),
            ],
        ),
        (
            "HAR",
            "hair care",
            (7, 189),
            [
                (
                    "Repair Shampoo",
                    "Verdant",
                    "sulphate-free shampoo for dry and damaged hair",
                    "sulphate free|300 ml",
                    (7, 24),
                ),
                (
                    "Silk Conditioner",
                    "Verdant",
                    "lightweight conditioner that detangles",
                    "300 ml|silicone free",
                    (7, 24),
                ),
                (
                    "Ionic Hair Dryer",
                    "Glow Tools",
                    "fast ionic hair dryer with diffuser and concentrator",
                    "2000 W|ionic|3 heat settings",
                ),
                (
                    "Ceramic Straightener",
                    "Glow Tools",
                    "ceramic plate straightener with adjustable heat",
                    "ceramic plates|150-230 °C|auto off",
                ),
            ],
        ),
        (
            "FRG",
            "fragrance",
            (25, 129),
            [
                (
                    "Cedar & Fig Eau de Parfum",
                    "Maison Ora",
                    "warm woody fragrance with fig and cedar",
                    "50 ml|eau de parfum",
                ),
                (
                    "Citrus Grove Eau de Toilette",
                    "Maison Ora",
                    "fresh citrus scent with bergamot and neroli",
                    "100 ml|eau de toilette",
                ),
                (
                    "Amber Night Eau de Parfum",
                    "Maison Ora",
                    "rich amber and vanilla evening scent",
                    "50 ml|eau de parfum",
                ),
            ],
        ),
        (
            "GRM",
            "grooming",
            (12, 149),
            [
                (
                    "Precision Beard Trimmer",
                    "Glow Tools",
                    "cordless beard trimmer with 20 length settings",
                    "20 lengths|90 min runtime|washable",
                ),
                (
                    "Electric Toothbrush Sonic",
                    "Glow Tools",
                    "sonic toothbrush with pressure sensor and travel case",
                    "pressure sensor|2 min timer|travel case",
                ),
                (
                    "Bamboo Hair Brush",
                    "Verdant",
                    "bamboo paddle brush with cushioned pins",
                    "bamboo|cushioned pins",
                ),
            ],
        ),
    ],
}

COLOURS = {
    "clothing": ["black", "navy", "olive", "stone", "charcoal", "rust"],
    "electronics": ["black", "white", "graphite", "sand", "midnight blue"],
    "FRN": ["natural oak", "white", "walnut", "grey"],
    "BED": ["white", "sage", "oat"],
    "LGT": ["natural", "black", "brass"],
}


PREMIUM = (
    "premium",
    "pro",
    "studio",
    "4k",
    "ultrawide",
    "espresso",
    "robot",
    "cashmere",
    "gravel",
    "gps",
    "sofa",
)
BUDGET = (
    "budget",
    "lite",
    "mini",
    "kid",
    "travel",
    "pocket",
    "compact",
    "slim",
    "paperback",
    "board",
    "trio",
)


def _tier(text: str, rng: random.Random) -> float:
    """Where in its type's price range a product sits: premium words high, budget words low."""
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    if words & set(PREMIUM):
        return rng.uniform(0.75, 1.0)
    if words & set(BUDGET):
        return rng.uniform(0.0, 0.3)
    return rng.uniform(0.3, 0.7)


def rows() -> list[dict[str, str]]:
    """Every product in one or two colours (each colour is its own SKU, as in a real shop)."""
    rng = random.Random(20260421)
    out = []
    for category, groups in CATALOG.items():
        for code, kind, (low, high), variants in groups:
            serial = 100
            for name, brand, detail, features, *own in variants:
                base = f"{name} {kind.title()}" if code in ("AUD", "EAR", "SPK") else name
                cheapest, dearest = own[0] if own else (low, high)
                price = round(cheapest + (dearest - cheapest) * _tier(f"{name} {detail}", rng)) - 0.01
                palette = COLOURS.get(code) or COLOURS.get(category)
                colours = rng.sample(palette, 2) if palette else [""]
                for colour in colours:
                    serial += 1
                    description = f"{base} by {brand}: {detail}. Part of our {kind} range."
                    if colour:
                        description += f" Colour: {colour}."
                    out.append(
                        {
                            "id": f"{code}-{serial}",
                            "name": f"{base}, {colour.title()}" if colour else base,
                            "category": category,
                            "brand": brand,
                            "price": f"{price:.2f}",
                            "stock": str(rng.choice([0, 2, 5, 8, 12, 20, 35, 50, 80])),
                            "rating": f"{rng.uniform(3.4, 4.9):.1f}",
                            "reviews_count": str(rng.randint(3, 2400)),
                            "description": description,
                            "features": features,
                        }
                    )
    ids = [r["id"] for r in out]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return out


def main() -> None:
    data = rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    print(f"wrote {len(data)} products to {OUT}")


if __name__ == "__main__":
    main()
