use super::*;
use proptest::prelude::*;

/// Tallinn, Mon–Fri 09–17, Friday split for lunch, a Saturday opened,
/// holidays and a short day around Christmas 2026.
const EE: &str = "\
timezone: Europe/Tallinn
hours:
  mon: \"09:00-17:00\"
  tue: \"09:00-17:00\"
  wed: \"09:00-17:00\"
  thu: \"09:00-17:00\"
  fri: \"09:00-12:00,13:00-17:00\"
holidays: [2026-12-24, 2026-12-25, \"2026-12-26\"]
half_days:
  \"2026-12-23\": \"09:00-13:00\"
  2026-12-19: \"10:00-14:00\"
";

fn cal() -> Calendar {
    Calendar::parse(EE, "ee.yaml").unwrap()
}

/// A local Tallinn wall time, `2026-03-27T16:00`.
fn at(local: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = local.parse().unwrap();
    dt.to_zoned(TimeZone::get("Europe/Tallinn").unwrap())
        .unwrap()
        .timestamp()
}

fn h(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

fn m(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

#[test]
fn due_inside_one_day() {
    let c = cal();
    assert_eq!(
        c.add_business(at("2026-03-10T10:00"), h(4)),
        at("2026-03-10T14:00")
    );
    // Exactly the rest of the day: due at closing, not the next morning.
    assert_eq!(
        c.add_business(at("2026-03-10T10:00"), h(7)),
        at("2026-03-10T17:00")
    );
    assert_eq!(
        c.add_business(at("2026-03-10T10:00"), m(7 * 60 + 1)),
        at("2026-03-11T09:01")
    );
}

#[test]
fn due_across_nights_and_weekends() {
    let c = cal();
    // Before opening: the clock starts at 09:00.
    assert_eq!(
        c.add_business(at("2026-03-10T06:30"), h(1)),
        at("2026-03-10T10:00")
    );
    // Friday 16:00 + 4h: 1h Friday, weekend closed, 3h Monday.
    assert_eq!(
        c.add_business(at("2026-03-13T16:00"), h(4)),
        at("2026-03-16T12:00")
    );
    // Saturday: nothing until Monday.
    assert_eq!(
        c.add_business(at("2026-03-14T11:00"), h(2)),
        at("2026-03-16T11:00")
    );
    // 3d of open time = 72 open hours; a week here has 39 (Friday 7).
    let due = c.add_business(at("2026-03-02T09:00"), h(72));
    assert_eq!(due, at("2026-03-13T10:00"));
    assert_eq!(c.business_between(at("2026-03-02T09:00"), due), h(72));
}

#[test]
fn multi_interval_days_skip_the_lunch_break() {
    let c = cal();
    // Friday 11:00 + 2h: 1h before lunch, 1h after.
    assert_eq!(
        c.add_business(at("2026-03-13T11:00"), h(2)),
        at("2026-03-13T14:00")
    );
    // Reaching the end of the morning exactly: due at 12:00.
    assert_eq!(
        c.add_business(at("2026-03-13T11:00"), h(1)),
        at("2026-03-13T12:00")
    );
    assert!(!c.is_open(at("2026-03-13T12:30")));
    assert!(c.is_open(at("2026-03-13T13:00")));
    assert_eq!(
        c.business_between(at("2026-03-13T08:00"), at("2026-03-13T18:00")),
        h(7)
    );
}

#[test]
fn holidays_and_half_days() {
    let c = cal();
    // Wed 23 Dec 2026 is 09–13; 24–26 are holidays; Sun 27 closed.
    assert_eq!(
        c.add_business(at("2026-12-23T12:00"), h(2)),
        at("2026-12-28T10:00")
    );
    assert!(!c.is_open(at("2026-12-23T14:00")));
    assert!(!c.is_open(at("2026-12-24T10:00")));
    assert!(c.is_holiday("2026-12-25".parse().unwrap()));
    // A Saturday opened by half_days.
    assert!(c.is_open(at("2026-12-19T10:00")));
    assert_eq!(
        c.add_business(at("2026-12-18T16:30"), h(1)),
        at("2026-12-19T10:30")
    );
    assert_eq!(
        c.business_between(at("2026-12-21T00:00"), at("2026-12-29T00:00")),
        h(8 + 8 + 4 + 8)
    );
}

#[test]
fn dst_changes_in_tallinn() {
    // Clocks go 03:00 → 04:00 on Sun 29 Mar 2026 and 04:00 → 03:00 on Sun
    // 25 Oct 2026. Office hours never straddle them: Friday to Monday is
    // still one hour of open time apart, though not 72 real hours.
    let c = cal();
    assert_eq!(
        c.add_business(at("2026-03-27T16:00"), h(2)),
        at("2026-03-30T10:00")
    );
    assert_eq!(
        at("2026-03-30T10:00").duration_since(at("2026-03-27T16:00")),
        h(65)
    );
    assert_eq!(
        c.add_business(at("2026-10-23T16:00"), h(2)),
        at("2026-10-26T10:00")
    );
    assert_eq!(
        at("2026-10-26T10:00").duration_since(at("2026-10-23T16:00")),
        h(67)
    );
    // Offsets before and after: +02 in winter, +03 in summer.
    assert_eq!(at("2026-03-30T09:00").to_string(), "2026-03-30T06:00:00Z");
    assert_eq!(at("2026-03-27T09:00").to_string(), "2026-03-27T07:00:00Z");

    // Around the clock in Tallinn: the spring day has 23 open hours, the
    // autumn day 25, because open time is real time.
    let all = Calendar::parse(
        "timezone: Europe/Tallinn\nhours: {sat: \"00:00-24:00\", sun: \"00:00-24:00\"}\n",
        "x.yaml",
    )
    .unwrap();
    assert_eq!(
        all.business_between(at("2026-03-29T00:00"), at("2026-03-30T00:00")),
        h(23)
    );
    assert_eq!(
        all.business_between(at("2026-10-25T00:00"), at("2026-10-26T00:00")),
        h(25)
    );
    // Sat 22:00 + 5h of open time on the spring night: 02:59 is followed
    // by 04:00, so five real hours end at 04:00 wall time.
    assert_eq!(
        all.add_business(at("2026-03-28T22:00"), h(5)),
        at("2026-03-29T04:00")
    );
    // Autumn: 03:00 comes twice; five hours end at the first one.
    let due = all.add_business(at("2026-10-24T22:00"), h(5));
    assert_eq!(due, at("2026-10-25T03:00"));
    assert_eq!(due.to_string(), "2026-10-25T00:00:00Z");
}

#[test]
fn a_day_with_hours_inside_the_dst_gap() {
    // 03:00–04:00 does not exist in Tallinn on 29 Mar 2026: both ends move
    // forward by an hour, so the day keeps its half hour.
    let c = Calendar::parse(
        "timezone: Europe/Tallinn\nhours: {sun: \"03:15-03:45\"}\n",
        "x.yaml",
    )
    .unwrap();
    let d = "2026-03-29".parse().unwrap();
    assert_eq!(c.open_on(d).len(), 1);
    assert_eq!(
        c.business_between(at("2026-03-29T00:00"), at("2026-03-30T00:00")),
        m(30)
    );
}

#[test]
fn pauses_stop_the_clock() {
    let c = cal();
    let start = at("2026-03-10T09:00");
    assert_eq!(
        c.due_with_pauses(start, h(4), &[]),
        Clock::Due(at("2026-03-10T13:00"))
    );
    // Waiting on the customer 10:00–15:00: 5 open hours do not count.
    let p = [(at("2026-03-10T10:00"), Some(at("2026-03-10T15:00")))];
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Due(at("2026-03-11T10:00"))
    );
    // A pause overnight costs only the open time inside it.
    let p = [(at("2026-03-10T16:00"), Some(at("2026-03-11T10:00")))];
    assert_eq!(
        c.due_with_pauses(start, h(8), &p),
        Clock::Due(at("2026-03-11T11:00"))
    );
    // Due before the pause begins: the pause does not matter.
    let p = [(at("2026-03-10T14:00"), None)];
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Due(at("2026-03-10T13:00"))
    );
    // Due exactly when the pause begins: due then.
    let p = [(at("2026-03-10T13:00"), None)];
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Due(at("2026-03-10T13:00"))
    );
    // Still paused: no due time, 3h left for when the clock resumes.
    let p = [(at("2026-03-10T10:00"), None)];
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Paused {
            since: at("2026-03-10T10:00"),
            remaining: h(3)
        }
    );
    // Overlapping, unordered pauses, one begun before start.
    let p = [
        (at("2026-03-10T12:00"), Some(at("2026-03-10T13:00"))),
        (at("2026-03-09T12:00"), Some(at("2026-03-10T10:00"))),
        (at("2026-03-10T11:00"), Some(at("2026-03-10T12:30"))),
    ];
    // Open 10–11 and 13:00– : 1h + 3h → 16:00.
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Due(at("2026-03-10T16:00"))
    );
    // A pause that ended before start is ignored.
    let p = [(at("2026-03-09T10:00"), Some(at("2026-03-09T12:00")))];
    assert_eq!(
        c.due_with_pauses(start, h(4), &p),
        Clock::Due(at("2026-03-10T13:00"))
    );
}

#[test]
fn long_targets_walk_by_day() {
    let c = cal();
    let start = at("2026-01-05T09:00");
    let due = c.add_business(start, h(30 * 24));
    assert_eq!(c.business_between(start, due), h(30 * 24));
    assert!(due > at("2026-05-01T00:00"));
    let always = Calendar::always_open();
    assert_eq!(always.add_business(start, h(24 * 30)), start + h(24 * 30));
}

#[test]
fn zero_work_and_empty_ranges() {
    let c = cal();
    let t = at("2026-03-14T11:00");
    assert_eq!(c.add_business(t, SignedDuration::ZERO), t);
    assert_eq!(c.add_business(t, h(-1)), t);
    assert_eq!(c.business_between(t, t), SignedDuration::ZERO);
    assert_eq!(c.business_between(t + h(1), t), SignedDuration::ZERO);
}

#[test]
fn intervals_parse_and_refuse() {
    assert_eq!(parse_intervals("closed").unwrap(), vec![]);
    assert_eq!(parse_intervals("").unwrap(), vec![]);
    assert_eq!(
        parse_intervals("09:00-12:00, 13:00-24:00").unwrap().len(),
        2
    );
    for bad in [
        "9-17",
        "17:00-09:00",
        "09:00-12:00,11:00-13:00",
        "13:00-17:00,09:00-12:00",
        "00:00-24:00,10:00-11:00",
        "09:00",
        "09:00-09:00",
    ] {
        assert!(parse_intervals(bad).is_err(), "{bad}");
    }
}

#[test]
fn file_errors_name_line_and_key() {
    let e = |t: &str| Calendar::parse(t, "c.yaml").unwrap_err().to_string();
    assert_eq!(
        e("timezone: Mars/Olympus\nhours: {mon: \"09:00-17:00\"}\n")
            .split(" (e.g.")
            .next(),
        Some("c.yaml:1: timezone: \"Mars/Olympus\" is not a time zone")
    );
    let x = e("timezone: UTC\nhours:\n  mom: \"09:00-17:00\"\n");
    assert!(
        x.starts_with("c.yaml:3:") && x.contains("unknown field `mom`"),
        "{x}"
    );
    let x = e("timezone: UTC\nhours: {mon: \"09:00-17:00\"}\nholidays: [2026-02-30]\n");
    assert!(x.starts_with("c.yaml:3:"), "{x}");
    let x = e("timezone: UTC\nhours: {mon: \"09:00-17:00\"}\nhalf_days:\n  \"2026-12-23\": \"13:00-09:00\"\n");
    assert!(
        x.starts_with("c.yaml:4: half_days.2026-12-23: \"13:00-09:00\" is not working hours"),
        "{x}"
    );
    let x = e("timezone: UTC\nhours: {mon: \"09:00-17:00\"}\nholidays: [2026-12-23]\nhalf_days: {\"2026-12-23\": \"09:00-13:00\"}\n");
    assert_eq!(x, "c.yaml:4: half_days.2026-12-23: is also in holidays; a date is either closed or has its own hours");
    let x = e("timezone: UTC\nhours: {sat: closed}\n");
    assert_eq!(
        x,
        "c.yaml:2: hours: no day has working hours (e.g. mon: \"09:00-17:00\")"
    );
    let x = e("hours: {mon: \"09:00-17:00\"}\n");
    assert!(x.contains("missing field `timezone`"), "{x}");
    let x = e("timezone: UTC\nhours: {mon: \"09:00-17:00\"}\nholyday: []\n");
    assert!(x.starts_with("c.yaml:3:") && x.contains("holyday"), "{x}");
}

/// Easter Sunday (anonymous Gregorian algorithm), to check the shipped
/// files' moveable feasts against something other than a table.
fn easter(y: i16) -> Date {
    let y = i32::from(y);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(y as i16, month as i8, day as i8).unwrap()
}

fn shipped(name: &str) -> Calendar {
    let p = format!(
        "{}/config/calendars/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    Calendar::load(Path::new(&p)).unwrap_or_else(|e| panic!("{e}"))
}

fn d(s: &str) -> Date {
    s.parse().unwrap()
}

#[test]
fn easter_dates() {
    assert_eq!(easter(2026), d("2026-04-05"));
    assert_eq!(easter(2027), d("2027-03-28"));
}

#[test]
fn shipped_calendars_load_with_known_holidays() {
    let ee = shipped("ee");
    let fi = shipped("fi");
    let pl = shipped("pl");
    let cz = shipped("cz");
    assert_eq!(ee.timezone_name(), "Europe/Tallinn");
    assert_eq!(fi.timezone_name(), "Europe/Helsinki");
    assert_eq!(pl.timezone_name(), "Europe/Warsaw");
    assert_eq!(cz.timezone_name(), "Europe/Prague");
    for y in [2026i16, 2027] {
        let e = easter(y);
        let off = |n: i64| e.checked_add(jiff::Span::new().days(n)).unwrap();
        let fixed = |md: &str| d(&format!("{y}-{md}"));
        for c in [&ee, &fi, &pl, &cz] {
            assert!(c.is_holiday(fixed("01-01")), "{} {y}", c.timezone_name());
            assert!(c.is_holiday(fixed("05-01")), "{} {y}", c.timezone_name());
            assert!(c.is_holiday(fixed("12-24")), "{} {y}", c.timezone_name());
            assert!(c.is_holiday(fixed("12-25")), "{} {y}", c.timezone_name());
            assert!(c.is_holiday(fixed("12-26")), "{} {y}", c.timezone_name());
        }
        // Estonia: Good Friday, Easter, Pentecost, 24 Feb, 23–24 Jun, 20 Aug.
        for day in [off(-2), e, off(49)] {
            assert!(ee.is_holiday(day), "ee {day}");
        }
        for md in ["02-24", "06-23", "06-24", "08-20"] {
            assert!(ee.is_holiday(fixed(md)), "ee {y}-{md}");
        }
        assert!(!ee.is_holiday(off(1)), "no Easter Monday in Estonia");
        // Finland: Epiphany, Good Friday, Easter Monday, Ascension, 6 Dec.
        for day in [off(-2), off(1), off(39)] {
            assert!(fi.is_holiday(day), "fi {day}");
        }
        for md in ["01-06", "12-06"] {
            assert!(fi.is_holiday(fixed(md)), "fi {y}-{md}");
        }
        // Poland: Easter Monday, Corpus Christi, 3 May, 15 Aug, 1 and 11 Nov.
        for day in [off(1), off(60)] {
            assert!(pl.is_holiday(day), "pl {day}");
        }
        for md in ["01-06", "05-03", "08-15", "11-01", "11-11"] {
            assert!(pl.is_holiday(fixed(md)), "pl {y}-{md}");
        }
        assert!(
            !pl.is_holiday(off(-2)),
            "Good Friday is a working day in Poland"
        );
        // Czechia: Good Friday, Easter Monday and the fixed state holidays.
        for day in [off(-2), off(1)] {
            assert!(cz.is_holiday(day), "cz {day}");
        }
        for md in ["05-08", "07-05", "07-06", "09-28", "10-28", "11-17"] {
            assert!(cz.is_holiday(fixed(md)), "cz {y}-{md}");
        }
    }
    // Finnish Midsummer Eve and All Saints' Day move with the weekday.
    for day in [
        "2026-06-19",
        "2026-06-20",
        "2026-10-31",
        "2027-06-25",
        "2027-06-26",
        "2027-11-06",
    ] {
        assert!(fi.is_holiday(d(day)), "fi {day}");
    }
    // Estonian short days: three hours off before 24 Feb, 23 Jun, 24 Dec
    // and 1 Jan.
    for day in [
        "2026-02-23",
        "2026-06-22",
        "2026-12-23",
        "2026-12-31",
        "2027-02-23",
        "2027-06-22",
        "2027-12-23",
        "2027-12-31",
    ] {
        let hours = ee.hours_on(d(day));
        assert_eq!(hours.len(), 1, "{day}");
        assert_eq!(hours[0].end, Some(Time::constant(14, 0, 0, 0)), "{day}");
    }
    assert!(ee.is_open(at("2026-03-10T09:00")));
    assert!(!ee.is_open(at("2026-12-23T14:00")));
}

fn ts_in_2026() -> impl Strategy<Value = Timestamp> {
    // 2026-01-01 .. 2027-01-01 UTC, minute resolution.
    (0i64..525_600).prop_map(|mins| Timestamp::from_second(1_767_225_600 + mins * 60).unwrap())
}

fn work() -> impl Strategy<Value = SignedDuration> {
    (1i64..(24 * 60 * 20)).prop_map(SignedDuration::from_mins)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_later_start_is_never_due_earlier(a in ts_in_2026(), gap in 0i64..(86_400 * 10), w in work()) {
        let c = cal();
        let b = a + SignedDuration::from_secs(gap);
        prop_assert!(c.add_business(b, w) >= c.add_business(a, w));
    }

    #[test]
    fn more_work_is_never_due_earlier(a in ts_in_2026(), w in work(), more in 0i64..600) {
        let c = cal();
        prop_assert!(c.add_business(a, w + SignedDuration::from_mins(more)) >= c.add_business(a, w));
    }

    #[test]
    fn a_pause_never_makes_it_due_earlier(
        start in ts_in_2026(),
        w in work(),
        pauses in prop::collection::vec((0i64..(86_400 * 30), prop::option::of(0i64..(86_400 * 5))), 0..4),
        extra in (0i64..(86_400 * 30), prop::option::of(0i64..(86_400 * 5))),
    ) {
        let c = cal();
        let mk = |(off, len): (i64, Option<i64>)| {
            let from = start + SignedDuration::from_secs(off - 86_400);
            (from, len.map(|l| from + SignedDuration::from_secs(l)))
        };
        let mut ps: Vec<_> = pauses.into_iter().map(mk).collect();
        let before = c.due_with_pauses(start, w, &ps);
        ps.push(mk(extra));
        let after = c.due_with_pauses(start, w, &ps);
        match (before, after) {
            (Clock::Due(x), Clock::Due(y)) => prop_assert!(y >= x, "{x} -> {y}"),
            // An open pause leaves no due time: later than any.
            (Clock::Due(_), Clock::Paused { .. }) => {}
            (Clock::Paused { .. }, Clock::Due(_)) => prop_assert!(false, "a pause resumed the clock"),
            // Less open time counted before the clock stopped: more left.
            (Clock::Paused { remaining: r1, .. }, Clock::Paused { remaining: r2, .. }) => {
                prop_assert!(r2 >= r1, "{r1} -> {r2}");
            }
        }
    }

    #[test]
    fn no_pauses_is_add_business(start in ts_in_2026(), w in work()) {
        let c = cal();
        prop_assert_eq!(c.due_with_pauses(start, w, &[]), Clock::Due(c.add_business(start, w)));
    }

    #[test]
    fn round_trips_from_open_starts(start in ts_in_2026(), due_after in work()) {
        let c = cal();
        prop_assume!(c.is_open(start));
        let due = c.add_business(start, due_after);
        let between = c.business_between(start, due);
        prop_assert_eq!(between, due_after);
        prop_assert_eq!(c.add_business(start, between), due);
    }

    #[test]
    fn due_times_fall_in_open_hours_or_at_a_closing(start in ts_in_2026(), w in work()) {
        let c = cal();
        let due = c.add_business(start, w);
        let just_before = due - SignedDuration::from_secs(1);
        // Open at `due`, or `due` ends an opening (open just before).
        prop_assert!(c.is_open(due) || c.is_open(just_before), "{due}");
        prop_assert!(due > start);
    }
}
