//! Chart primitives for the lab's SVG figures, drawn with `plotters`: a page, axes with ticks
//! of our choosing, lines, horizontal bars and a legend panel.
//!
//! The figures themselves are drawn elsewhere, beside the data they show: the suite's in
//! [`crate::lab::suite`], the regression gate's history in [`crate::lab::compare`]. This file
//! knows neither, so either can change its figures without touching the other's, and neither
//! imports the other through it.
//!
//! Log axes are drawn as linear axes over `log10` of values clamped to a floor, so a zero
//! never reaches a logarithm.
//!
//! Text is written as SVG `<text>` elements and laid out by the viewer's fonts: `plotters`
//! is built without its font features, which would need system fonts, and only estimates
//! text extents from character counts when it places labels.

use std::error::Error;
use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// What drawing returns: plotters' errors are boxed, as they are only ever reported.
pub(crate) type Res<T = ()> = Result<T, Box<dyn Error>>;
/// A plot: its SVG text, or `None` when the report has no data for it.
pub(crate) type Plot = Res<Option<String>>;
/// A region of an SVG page, in pixels.
pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// One series' line: its name, its colour, its points in plotted units.
pub(crate) type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
/// A chart on an [`Area`].
pub(crate) type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// Page size in pixels.
pub(crate) const SIZE: (u32, u32) = (800, 500);
/// Width of the plot beside a legend panel; the legend gets the rest of the page.
pub(crate) const PLOT_W: i32 = 590;

/// One colour per series, by its index (a model's place in the suite's report, or in the
/// gate's history), so a model keeps its colour in every figure: Tableau 10 (distinct, and
/// still distinguishable to most colour-blind readers), then four darker hues from d3's
/// category20b, because the suite has twelve standard models and two sharing a colour were
/// told apart only by the legend's order. Past fourteen the colours repeat.
pub(crate) fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 14] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(57, 59, 121),
        RGBColor(140, 109, 49),
        RGBColor(99, 121, 57),
        RGBColor(123, 65, 115),
    ];
    PALETTE[index % PALETTE.len()]
}

/// `c` mixed with white: 0 keeps it, 1 is white.
pub(crate) fn lighten(c: RGBColor, by: f64) -> RGBColor {
    let mix = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * by.clamp(0.0, 1.0)).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// `v` if it is a finite number of at least `floor`, else `floor`: what a log axis can take.
pub(crate) fn at_least(v: f64, floor: f64) -> f64 {
    if v.is_finite() && v > floor {
        v
    } else {
        floor
    }
}

/// `log10` of `v` clamped to `floor`.
pub(crate) fn lg(v: f64, floor: f64) -> f64 {
    at_least(v, floor).log10()
}

/// `v` with a k or M suffix and at most two decimals: `250`, `1.5k`, `0.02`, `2M`.
pub(crate) fn si(v: f64) -> String {
    let (div, suffix) = if v.abs() >= 1e6 {
        (1e6, "M")
    } else if v.abs() >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let s = format!("{:.2}", v / div);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// A font of the viewer's sans-serif family.
pub(crate) fn font(size: f64) -> TextStyle<'static> {
    (FontFamily::SansSerif, size).into_font().into()
}

/// One axis: its range and labelled ticks in plotted units, how a tick reads, what it shows.
pub(crate) struct Axis<'a> {
    range: Range<f64>,
    ticks: Vec<f64>,
    label: Box<dyn Fn(f64) -> String + 'a>,
    desc: String,
    /// Grid lines at the ticks (not for the axis of a bar chart's categories).
    grid: bool,
}

impl<'a> Axis<'a> {
    /// An axis with grid lines.
    pub(crate) fn new(
        range: Range<f64>,
        ticks: Vec<f64>,
        label: impl Fn(f64) -> String + 'a,
        desc: &str,
    ) -> Self {
        Axis {
            range,
            ticks,
            label: Box::new(label),
            desc: desc.into(),
            grid: true,
        }
    }

    /// From 0 to a little above `max`, with ticks at a round step.
    pub(crate) fn linear(max: f64, desc: &str) -> Axis<'a> {
        let top = if max.is_finite() && max > 0.0 {
            max * 1.08
        } else {
            1.0
        };
        let raw = top / 6.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .map(|m| m * mag)
            .into_iter()
            .find(|s| *s >= raw);
        let step = step.unwrap_or(10.0 * mag);
        let ticks = (0..).map(|i| f64::from(i) * step).take_while(|t| *t <= top);
        Axis::new(0.0..top, ticks.collect(), si, desc)
    }

    /// Log scale over whole decades around `logs` (values already through [`lg`]); over
    /// three decades or fewer, ticks at 1, 2 and 5 times each power of ten.
    pub(crate) fn log(logs: impl IntoIterator<Item = f64>, desc: &str) -> Axis<'a> {
        let logs: Vec<f64> = logs.into_iter().filter(|v| v.is_finite()).collect();
        let lo = logs.iter().copied().fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo.floor() } else { 0.0 };
        let hi = logs.iter().copied().fold(lo + 1.0, f64::max).ceil();
        let steps: &[f64] = if hi - lo <= 3.0 {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        let decades = (lo as i32..hi as i32).map(f64::from);
        let mut ticks: Vec<f64> = decades
            .flat_map(|d| steps.iter().map(move |m| d + m.log10()))
            .collect();
        ticks.push(hi);
        Axis::new(lo..hi, ticks, |v| si(10f64.powf(v)), desc)
    }

    /// Log scale with a tick at each of `xs` (connection counts), labelled as the count.
    pub(crate) fn log_counts(xs: &[u32], desc: &str) -> Axis<'a> {
        let ticks: Vec<f64> = xs.iter().map(|x| lg(f64::from(*x), 1.0)).collect();
        let lo = ticks.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ticks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = match (lo.is_finite(), hi > lo) {
            (false, _) => (0.0, 1.0),
            (true, true) => (lo, hi),
            // One count: centre it.
            (true, false) => (lo - 0.5, lo + 0.5),
        };
        let pad = (hi - lo) * 0.05;
        Axis::new(
            lo - pad..hi + pad,
            ticks,
            |v| format!("{:.0}", 10f64.powf(v)),
            desc,
        )
    }

    /// One category per name, at 0, 1, ..., labelled with the name.
    pub(crate) fn categories(names: Vec<String>, desc: &str) -> Axis<'a> {
        let n = names.len() as f64;
        let ticks = (0..names.len()).map(|i| i as f64).collect();
        let label = move |v: f64| {
            let i = v.round();
            let found = (i >= 0.0).then(|| names.get(i as usize)).flatten();
            found.cloned().unwrap_or_default()
        };
        Axis {
            grid: false,
            ..Axis::new(-0.5..n - 0.5, ticks, label, desc)
        }
    }
}

/// A linear coordinate with ticks of our choosing, over plotted (possibly `log10`) values.
/// (plotters' own `WithKeyPoints` over `f64` cannot take a label formatter.)
#[derive(Debug)]
pub(crate) struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (from, to): (i32, i32)) -> i32 {
        let Range { start, end } = self.range;
        let f = if end > start {
            (v - start) / (end - start)
        } else {
            0.0
        };
        from + (f64::from(to - from) * f).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Only major ticks: no light grid lines between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Renders one page: white, `title` on top; `draw` gets the area below it.
pub(crate) fn page(title: &str, draw: impl FnOnce(&Area<'_>) -> Res) -> Plot {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, font(22.0))?;
        draw(&body)?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// A chart on `area` with the axes' ticks, labels and grid; `y_area` is the width of the
/// y labels in pixels (wide for model names).
pub(crate) fn chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: Option<&str>,
    x: &Axis,
    y: &Axis,
    y_area: u32,
) -> Res<Chart<'a, 'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(y_area);
    if let Some(caption) = caption {
        builder.caption(caption, font(17.0));
    }
    let ticked = |a: &Axis| Ticked {
        range: a.range.clone(),
        ticks: a.ticks.clone(),
    };
    let mut chart = builder.build_cartesian_2d(ticked(x), ticked(y))?;
    let (fx, fy) = (|v: &f64| (x.label)(*v), |v: &f64| (y.label)(*v));
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.desc.as_str())
        .y_desc(y.desc.as_str())
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style(font(13.0))
        .axis_desc_style(font(15.0))
        .bold_line_style(BLACK.mix(0.12));
    if !x.grid {
        mesh.disable_x_mesh();
    }
    if !y.grid {
        mesh.disable_y_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

/// A legend panel: a swatch and a label per entry, then lines of notes.
pub(crate) fn legend(area: &Area<'_>, entries: &[(String, RGBColor)], notes: &[&str]) -> Res {
    let style = font(14.0).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 40;
    for (label, c) in entries {
        area.draw(&Rectangle::new([(8, y - 5), (30, y + 5)], c.filled()))?;
        area.draw(&Text::new(label.clone(), (38, y), style.clone()))?;
        y += 24;
    }
    for note in notes {
        y += 18;
        area.draw(&Text::new(note.to_string(), (8, y), font(13.0)))?;
    }
    Ok(())
}

/// Points drawn apart from the lines, as hollow rings (the suite's partial cells, which belong
/// on no model's line), and what a ring means, for the legend when any is drawn.
#[derive(Default)]
pub(crate) struct Hollow<'a> {
    pub(crate) points: Vec<((f64, f64), RGBColor)>,
    pub(crate) note: &'a [&'a str],
}

/// A line with points per model, with a legend panel naming the models. `unable` marks
/// cells that could not be measured: an x, and a label, near the bottom at their x.
/// `hollow` points are drawn as rings on no line.
pub(crate) fn lines(
    area: &Area<'_>,
    x: &Axis,
    y: &Axis,
    data: &[Line],
    dots: bool,
    unable: &[(f64, RGBColor, String)],
    hollow: &Hollow,
) -> Res {
    let (plot, side) = area.split_horizontally(PLOT_W);
    let mut chart = chart(&plot, None, x, y, 70)?;
    for (_, c, points) in data {
        chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
        if dots {
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
        }
    }
    for (p, c) in &hollow.points {
        chart.draw_series([
            Circle::new(*p, 6, WHITE.filled()),
            Circle::new(*p, 6, c.stroke_width(2)),
        ])?;
    }
    let span = y.range.end - y.range.start;
    let mid = (x.range.start + x.range.end) / 2.0;
    for (i, (at, c, label)) in unable.iter().enumerate() {
        let p = (*at, y.range.start + span * (0.06 + 0.07 * i as f64));
        // Labels right of the middle hang to the left, so they stay inside the plot.
        let (dx, h) = if *at > mid {
            (-9, HPos::Right)
        } else {
            (9, HPos::Left)
        };
        let style = font(13.0).color(c).pos(Pos::new(h, VPos::Center));
        chart.plotting_area().draw(
            &(EmptyElement::at(p)
                + Cross::new((0, 0), 6, c.stroke_width(2))
                + Text::new(label.clone(), (dx, 0), style)),
        )?;
    }
    let entries: Vec<(String, RGBColor)> = data
        .iter()
        .map(|(name, c, _)| (name.to_string(), *c))
        .collect();
    let notes: &[&str] = if hollow.points.is_empty() {
        &[]
    } else {
        hollow.note
    };
    legend(&side, &entries, notes)
}

/// One row of a horizontal bar chart: a model and its bars, top to bottom, each lighter than
/// the one above. `None` is drawn as "n/a".
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) colour: RGBColor,
    pub(crate) values: Vec<Option<f64>>,
}

/// Horizontal bars, one row per model (the first at the top), each bar labelled with its
/// value; the model names are the categories, so the axis is the legend.
pub(crate) fn hbars(area: &Area<'_>, caption: Option<&str>, desc: &str, rows: &[Row]) -> Res {
    let max =
        (rows.iter().flat_map(|r| r.values.iter().flatten())).fold(0.0, |m: f64, v| m.max(*v));
    // Room on the right for the value labels.
    let x = Axis::linear(max * 1.2, desc);
    let names = rows.iter().rev().map(|r| r.name.clone()).collect();
    let y = Axis::categories(names, "");
    let mut chart = chart(area, caption, &x, &y, 130)?;
    let n = rows.len();
    let value_style = font(12.0).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, row) in rows.iter().enumerate() {
        let centre = (n - 1 - i) as f64;
        let h = 0.8 / row.values.len().max(1) as f64;
        for (j, v) in row.values.iter().enumerate() {
            let top = centre + 0.4 - h * j as f64;
            let (bottom, mid) = (top - h * 0.9, top - h * 0.45);
            let fill = lighten(row.colour, 0.55 * j as f64);
            let end = v.unwrap_or(0.0);
            let text = v.map_or_else(|| "n/a".to_string(), si);
            chart.draw_series([Rectangle::new([(0.0, bottom), (end, top)], fill.filled())])?;
            chart.plotting_area().draw(
                &(EmptyElement::at((end, mid)) + Text::new(text, (4, 0), value_style.clone())),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The twelve standard models and redis-server get thirteen different colours.
    #[test]
    fn a_suites_models_do_not_share_a_colour() {
        let colours: Vec<(u8, u8, u8)> = (0..13).map(|i| colour(i).rgb()).collect();
        for (i, a) in colours.iter().enumerate() {
            assert!(!colours[..i].contains(a), "colour {i} repeats");
        }
    }

    #[test]
    fn helpers_keep_to_their_ranges() {
        assert_eq!(lg(0.0, 1.0), 0.0);
        assert_eq!(lg(f64::NAN, 1.0), 0.0);
        assert_eq!(si(1_500.0), "1.5k");
        assert_eq!(si(0.02), "0.02");
        assert_eq!(si(2_000_000.0), "2M");
        let axis = Axis::linear(0.0, "");
        assert_eq!(axis.range, 0.0..1.0);
        let axis = Axis::log([lg(0.0, 1.0), f64::NAN], "");
        assert_eq!(axis.range, 0.0..1.0);
        let axis = Axis::log([1.3, 2.9], "");
        assert_eq!((axis.range, axis.ticks.len()), (1.0..3.0, 7));
    }
}
