"""Word pools for the synthetic city: roads, compounds, people, companies.

No pool word contains a Chinese numeral (一 … 十, 百, 零, 两) or an address keyword (号, 楼,
单元, 室, 栋, 幢, 区, 县, #), so numeral and address-form dirt never changes a name's meaning; the
phases and zones of a compound (三期, 二区, 东区) are added on purpose, as real registries hold them.
"""

from __future__ import annotations

import numpy as np

FORBIDDEN = set("一二三四五六七八九十百千万零〇两号楼单元室栋幢区县#")

ROAD_STEMS = (
    "海曲 烟台 青岛 泰安 威海 济南 淄博 潍坊 临沂 聊城 德州 滨州 菏泽 枣庄 东营 莱芜 黄海 泰山 "
    "北京 上海 天津 重庆 太原 长春 沈阳 杭州 苏州 扬州 徐州 宁波 福州 厦门 广州 深圳 昆明 成都 "
    "兰州 西宁 银川 拉萨 桂林 南宁 合肥 南昌 长沙 武汉 郑州 洛阳 开封 安阳 邯郸 保定 秦皇 唐山 "
    "碧波 望海 观澜 听涛 迎宾 学苑 文化 兴业 富民 昌盛 安泰 和平 友谊 团结 光明 建设 胜利 "
    "奎山 卧龙 丹阳 莲花 桃花 杏林 柳青 松涛 枫林 竹园 梅园 菊园 荷塘 春晖 夏荷 秋实 冬青 "
    "金海 银滩 玉泉 清泉 碧霞 紫荆 丁香 海棠 石臼 涛雒 虎山 陈疃 汀溪 潮河 高兴 许孟 叩官 洪凝 "
    "人民 中山 解放 新华 健康 福寿 鸢飞 白浪 永安 育才"
).split()

COMPOUND_HEADS = (
    "阳光 翠湖 金色 海景 银河 东方 幸福 锦绣 碧水 蓝天 绿洲 华府 世纪 新城 龙湖 凤凰 御景 "
    "名门 书香 滨海 望湖 静园 雅苑 丽都 鑫源 恒大 万科 保利 绿地 融创 碧桂 中海 华润 金地 "
    "远洋 招商 春天 秋水 晨曦 朝阳 海韵 港湾 蓝湾 银座 财富 城市 领秀 尚品 悦府 铂悦 君悦 "
    "玉兰 牡丹 芙蓉 月季 紫薇 樱花 橡树 白桦 松柏 竹韵 清华 北辰 星河 天悦 云庭 山水 湖畔"
).split()
COMPOUND_TAILS = (
    "花园 家园 名苑 华庭 雅居 新村 公馆 嘉园 丽景 水岸 新城 佳苑 福邸 庄园 府邸 豪庭 里 湾 郡 城 苑 居 园 府 台 阁"
).split()

SURNAMES = (
    "王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 "
    "彭 曾 肖 田 董 袁 潘 于 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 "
    "石 廖 贾 夏 韦 付 方 白 邹 孟 熊 秦 邱 江 尹 薛 闫 段 雷 侯 龙 史 陶 黎 贺 顾 毛 郝 龚 邵"
).split()
GIVEN_CHARS = (
    "伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀 霞 平 刚 桂 英 华 玉 兰 萍 红 鹏 辉 "
    "婷 雪 琳 晨 浩 宇 轩 梓 涵 欣 怡 子 俊 博 文 佳 思 雨 泽 瑞 凯 鑫 颖 琪 悦 晗 诺 昊 然 "
    "宁 安 乐 阳 岚 峰 志 国 建 海 东 春 秋 冬 梅 燕 芬 淑 凤 荣 新 成 德 福 祥 庆 宏 斌"
).split()
# For a name conflict: the same name written with one character swapped for a look- or sound-alike.
VARIANT_CHARS = {
    "伟": "玮",
    "芳": "方",
    "娜": "那",
    "静": "靜",
    "丽": "莉",
    "强": "彊",
    "磊": "垒",
    "军": "君",
    "洋": "阳",
    "勇": "永",
    "艳": "燕",
    "杰": "傑",
    "涛": "滔",
    "明": "铭",
    "超": "朝",
    "霞": "侠",
    "华": "桦",
    "玉": "钰",
    "萍": "苹",
    "红": "虹",
    "鹏": "朋",
    "辉": "晖",
    "婷": "庭",
    "雪": "学",
    "琳": "林",
    "晨": "辰",
    "浩": "皓",
    "宇": "雨",
}

ETHNICITIES = ("汉", "汉", "汉", "汉", "汉", "汉", "汉", "汉", "汉", "回", "满", "蒙古", "朝鲜")

INDUSTRIES = (
    "商贸",
    "科技",
    "建材",
    "物流",
    "食品",
    "水产",
    "餐饮",
    "服装",
    "五金",
    "电子",
    "农业",
    "文化传媒",
    "机械",
    "环保",
    "医药",
)
SHOP_KINDS = ("便利店", "水产店", "理发店", "小吃店", "五金店", "服装店", "烟酒店", "果蔬店", "修理部", "超市")
COMPANY_TYPES = (
    "有限责任公司（自然人投资或控股）",
    "有限责任公司（自然人独资）",
    "股份有限公司（非上市）",
    "有限责任公司（国有独资）",
)


def clean(words: tuple[str, ...] | list[str]) -> list[str]:
    return [w for w in words if not (set(w) & FORBIDDEN)]


DIRECTIONS = ("东", "西", "南", "北", "中")
SINGLE_SUFFIXES = ("路", "街", "大道", "路", "中路", "东路", "西路", "北路", "南路")
SIBLING_SUFFIXES = ("路", "东路", "西路", "南路", "北路", "中路")
# phases and zones of one compound across neighbouring blocks; the registry writes numbers in Chinese
PHASE_NUMERALS = ("一", "二", "三", "四")
ZONE_DIRECTIONS = ("东区", "西区", "南区", "北区")


def direction_keys(name: str) -> set[str]:
    """What is left of a road name once a direction before its final 路 is dropped (海曲东路 → 海曲, 海曲东)."""
    keys = {name[:-1]} if name.endswith("路") else set()
    if len(name) > 2 and name[-2] in DIRECTIONS and name.endswith("路"):
        keys.add(name[:-2])
    return keys


def road_families(count: int, siblings: float, rng: np.random.Generator) -> list[str]:
    """``count`` distinct road names; a share ``siblings`` of them come in pairs that differ only by
    a direction (海曲中路 and 海曲东路, 海曲路 and 海曲西路), and no two other names do."""
    stems = clean(ROAD_STEMS)
    stems = [stems[i] for i in rng.permutation(len(stems))]
    heads = clean(COMPOUND_HEADS)
    extended = [s + h for s in stems for h in heads]
    extended = [extended[i] for i in rng.permutation(len(extended))]
    pairs = int(round(siblings * count / 2))
    singles = count - 2 * pairs
    used: set[str] = set()
    names: list[str] = []
    for stem in stems + extended:
        if pairs == 0 and singles == 0:
            break
        if pairs:
            a, b = rng.choice(len(SIBLING_SUFFIXES), 2, replace=False)
            family = [stem + SIBLING_SUFFIXES[a], stem + SIBLING_SUFFIXES[b]]
        else:
            family = [stem + SINGLE_SUFFIXES[rng.integers(0, len(SINGLE_SUFFIXES))]]
        keys = set().union(*(direction_keys(n) for n in family))
        if keys & used:
            continue
        used |= keys
        names += family
        if pairs:
            pairs -= 1
        else:
            singles -= 1
    if len(names) < count:
        raise ValueError(f"not enough road names for {count} roads")
    return names


def road_names_by_district(
    rows: list[int], shared: float, siblings: float, rng: np.random.Generator
) -> list[list[str]]:
    """One road name per grid row of each district.

    A share ``shared`` of the distinct names run through two districts, now and then three (人民路
    in several districts, as in most cities); the rest belong to one district. No name appears
    twice in one district, so a district's road and door number still name one block.
    """
    remaining = np.array(rows, dtype=int)
    total = int(remaining.sum())
    districts = len(rows)
    mean_reach = 2.25 if districts >= 3 else 2.0
    n_shared = 0 if shared <= 0 or districts < 2 else int(round(total / (mean_reach + (1 - shared) / shared)))
    groups: list[list[int]] = []
    for _ in range(n_shared):
        open_ = np.flatnonzero(remaining > 0)
        if len(open_) < 2:
            break
        reach = 3 if len(open_) >= 3 and rng.random() < 0.25 else 2
        pick = rng.choice(open_, reach, replace=False, p=remaining[open_] / remaining[open_].sum())
        remaining[pick] -= 1
        groups.append(sorted(int(d) for d in pick))
    for d in range(districts):
        groups += [[d]] * int(remaining[d])
    names = road_families(len(groups), siblings, rng)
    order = rng.permutation(len(groups))
    out: list[list[str]] = [[] for _ in rows]
    for name_at, group in zip(order, groups):
        for d in group:
            out[d].append(names[name_at])
    return [[names_d[i] for i in rng.permutation(len(names_d))] for names_d in out]


def unique_compound_bases(count: int, rng: np.random.Generator) -> list[str]:
    """Compound names unique city-wide even after adding or dropping 小区."""
    heads, tails = clean(COMPOUND_HEADS), clean(COMPOUND_TAILS)
    pool = [h + t for h in heads for t in tails]
    if len(pool) < count:
        pool += [a + h + t for a in ("新", "东", "西", "南", "北", "上", "御") for h in heads for t in tails]
    if len(pool) < count:
        pool += [a + b + h + t for a in heads[:20] for b in ("新", "东", "西") for h in heads for t in tails]
    if len(pool) < count:
        raise ValueError(f"not enough compound names for {count} compounds")
    order = rng.permutation(len(pool))[:count]
    return [pool[i] for i in order]
