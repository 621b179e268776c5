//! The dose session as an explicit state machine, driven by per-frame observations in capture
//! time (never wall time), so a replay gives the same verdict every run.
//!
//! This version has one phase, **face presence**: the session passes once exactly one face has
//! been seen with a score at or above `min_face_score` in `required_frames` consecutive frames.
//! It fails when `timeout_ms` of capture time pass first. Identity, liveness, pill and
//! ingestion phases slot in after it as further states.

/// What the perception stage saw in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameObservation {
    /// Faces at or above the detector's threshold.
    pub face_count: usize,
    /// Score of the best face, if any.
    pub best_face_score: Option<f32>,
}

/// Tunables of the session. The default asks for ten consecutive frames (about one second at a
/// replay's 10 fps) of one face scoring at least 0.75, within 20 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    pub min_face_score: f32,
    pub required_frames: u32,
    pub timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            min_face_score: 0.75,
            required_frames: 10,
            timeout_ms: 20_000,
        }
    }
}

/// Why the face phase failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceFailure {
    /// No frame showed a face well enough.
    NoFace,
    /// Faces were seen, but more than one at a time in the frames that had any.
    SeveralFaces,
    /// A single face was seen, but not steadily for long enough.
    NotSteady,
}

/// The result of the face-presence phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FacePresence {
    pub passed: Option<bool>,
    pub failure: Option<FaceFailure>,
    pub best_score: f32,
    pub frames_seen: u32,
    pub frames_with_one_face: u32,
    pub frames_with_several_faces: u32,
    /// Capture time at which the phase concluded.
    pub concluded_at_ms: u64,
}

impl FacePresence {
    /// The tally before any frame, at capture time `t_ms`.
    fn empty(t_ms: u64) -> Self {
        Self {
            passed: None,
            failure: None,
            best_score: 0.0,
            frames_seen: 0,
            frames_with_one_face: 0,
            frames_with_several_faces: 0,
            concluded_at_ms: t_ms,
        }
    }
}

/// State of a session between frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionState {
    /// Waiting for the first frame.
    NotStarted,
    /// Looking for a steady single face since `started_at_ms`.
    FacePresence {
        started_at_ms: u64,
        consecutive: u32,
        tally: FacePresence,
    },
    /// Concluded.
    Finished(FacePresence),
}

/// Emitted when the session concludes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionEvent {
    Concluded(FacePresence),
}

/// Advances the session by one frame observed at capture time `t_ms`.
pub fn step(
    state: SessionState,
    observation: FrameObservation,
    t_ms: u64,
    config: &SessionConfig,
) -> (SessionState, Option<SessionEvent>) {
    let (started_at_ms, mut consecutive, mut tally) = match state {
        SessionState::Finished(_) => return (state, None),
        SessionState::NotStarted => (t_ms, 0, FacePresence::empty(t_ms)),
        SessionState::FacePresence {
            started_at_ms,
            consecutive,
            tally,
        } => (started_at_ms, consecutive, tally),
    };
    tally.frames_seen += 1;
    let score = observation.best_face_score.unwrap_or(0.0);
    let one_good_face = observation.face_count == 1 && score >= config.min_face_score;
    if one_good_face {
        consecutive += 1;
        tally.frames_with_one_face += 1;
        tally.best_score = tally.best_score.max(score);
    } else {
        consecutive = 0;
        if observation.face_count > 1 {
            tally.frames_with_several_faces += 1;
        }
    }
    if consecutive >= config.required_frames.max(1) {
        tally.passed = Some(true);
        tally.concluded_at_ms = t_ms;
        return (
            SessionState::Finished(tally),
            Some(SessionEvent::Concluded(tally)),
        );
    }
    if t_ms.saturating_sub(started_at_ms) >= config.timeout_ms {
        return conclude_failed(tally, t_ms);
    }
    (
        SessionState::FacePresence {
            started_at_ms,
            consecutive,
            tally,
        },
        None,
    )
}

/// Ends an unfinished session (timeout, or the source ran out of frames) as failed.
pub fn abandon(state: SessionState, t_ms: u64) -> (SessionState, Option<SessionEvent>) {
    match state {
        SessionState::Finished(_) => (state, None),
        SessionState::NotStarted => conclude_failed(FacePresence::empty(t_ms), t_ms),
        SessionState::FacePresence { tally, .. } => conclude_failed(tally, t_ms),
    }
}

/// The session's result: the concluded tally, or — if the source ended first — the session
/// abandoned at `t_ms` and failed.
pub fn outcome(state: SessionState, t_ms: u64) -> FacePresence {
    match state {
        SessionState::Finished(tally) => tally,
        unfinished => match abandon(unfinished, t_ms) {
            (SessionState::Finished(tally), _) => tally,
            // `abandon` always finishes an unfinished session.
            (_, _) => FacePresence {
                passed: Some(false),
                ..FacePresence::empty(t_ms)
            },
        },
    }
}

fn conclude_failed(mut tally: FacePresence, t_ms: u64) -> (SessionState, Option<SessionEvent>) {
    tally.passed = Some(false);
    tally.concluded_at_ms = t_ms;
    tally.failure = Some(if tally.frames_with_one_face > 0 {
        FaceFailure::NotSteady
    } else if tally.frames_with_several_faces > 0 {
        FaceFailure::SeveralFaces
    } else {
        FaceFailure::NoFace
    });
    (
        SessionState::Finished(tally),
        Some(SessionEvent::Concluded(tally)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seen(face_count: usize, score: f32) -> FrameObservation {
        FrameObservation {
            face_count,
            best_face_score: (face_count > 0).then_some(score),
        }
    }

    fn run(observations: &[FrameObservation], config: &SessionConfig) -> Option<FacePresence> {
        let mut state = SessionState::NotStarted;
        for (index, observation) in observations.iter().enumerate() {
            let (next, event) = step(state, *observation, index as u64 * 100, config);
            state = next;
            if let Some(SessionEvent::Concluded(result)) = event {
                return Some(result);
            }
        }
        Some(outcome(state, observations.len() as u64 * 100))
    }

    #[test]
    fn a_steady_single_face_passes_at_the_required_frame() {
        let config = SessionConfig {
            min_face_score: 0.7,
            required_frames: 3,
            timeout_ms: 10_000,
        };
        let frames = [
            seen(0, 0.0),
            seen(1, 0.9),
            seen(1, 0.8),
            seen(1, 0.95),
            seen(1, 0.9),
        ];
        let result = run(&frames, &config).unwrap();
        assert_eq!(result.passed, Some(true));
        assert_eq!(result.concluded_at_ms, 300);
        assert_eq!(result.best_score, 0.95);
    }

    #[test]
    fn interruptions_reset_the_count_and_failures_say_why() {
        let config = SessionConfig {
            min_face_score: 0.7,
            required_frames: 3,
            timeout_ms: 10_000,
        };
        let flicker = [
            seen(1, 0.9),
            seen(1, 0.9),
            seen(0, 0.0),
            seen(1, 0.9),
            seen(1, 0.5),
        ];
        let result = run(&flicker, &config).unwrap();
        assert_eq!(
            (result.passed, result.failure),
            (Some(false), Some(FaceFailure::NotSteady))
        );
        let crowd = [seen(2, 0.9); 4];
        assert_eq!(
            run(&crowd, &config).unwrap().failure,
            Some(FaceFailure::SeveralFaces)
        );
        assert_eq!(
            run(&[seen(0, 0.0); 4], &config).unwrap().failure,
            Some(FaceFailure::NoFace)
        );
        assert_eq!(
            run(&[], &config).unwrap().failure,
            Some(FaceFailure::NoFace)
        );
    }

    #[test]
    fn the_timeout_is_measured_in_capture_time() {
        let config = SessionConfig {
            min_face_score: 0.7,
            required_frames: 50,
            timeout_ms: 250,
        };
        let result = run(&[seen(1, 0.9); 10], &config).unwrap();
        assert_eq!(result.passed, Some(false));
        assert_eq!(
            result.concluded_at_ms, 300,
            "frames arrive every 100 ms; 300 is the first ≥ 250"
        );
        assert_eq!(result.frames_seen, 4);
    }

    proptest! {
        #[test]
        fn the_session_concludes_exactly_once_and_passes_only_on_a_steady_face(
            counts in proptest::collection::vec(0usize..3, 0..40),
        ) {
            let config = SessionConfig { min_face_score: 0.5, required_frames: 4, timeout_ms: 100_000 };
            let observations: Vec<_> = counts.iter().map(|count| seen(*count, 0.9)).collect();
            let mut state = SessionState::NotStarted;
            let mut conclusions = 0;
            let mut streak = 0;
            let mut steady = false;
            for (index, observation) in observations.iter().enumerate() {
                if !steady {
                    streak = if observation.face_count == 1 { streak + 1 } else { 0 };
                    steady = streak >= 4;
                }
                let (next, event) = step(state, *observation, index as u64, &config);
                state = next;
                conclusions += usize::from(event.is_some());
            }
            let (_, event) = abandon(state, observations.len() as u64);
            conclusions += usize::from(event.is_some());
            prop_assert_eq!(conclusions, 1);
            prop_assert_eq!(outcome(state, 0).passed, Some(steady));
        }
    }
}
