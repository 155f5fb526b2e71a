//! An undo stack for multi-step setup: every step that created something pushes how to remove
//! it; unless the whole setup commits, dropping the stack runs the removals in reverse.

type Step<'a, C> = Box<dyn FnOnce(&mut C) + 'a>;

pub(crate) struct Undo<'a, C> {
    ctx: &'a mut C,
    steps: Vec<Step<'a, C>>,
}

impl<'a, C> Undo<'a, C> {
    pub fn new(ctx: &'a mut C) -> Self {
        Undo {
            ctx,
            steps: Vec::new(),
        }
    }

    pub fn ctx(&mut self) -> &mut C {
        self.ctx
    }

    pub fn push(&mut self, step: impl FnOnce(&mut C) + 'a) {
        self.steps.push(Box::new(step));
    }

    /// Keeps everything that was done.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl<C> Drop for Undo<'_, C> {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step(self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_back_in_reverse_unless_committed() {
        let mut log = Vec::new();
        {
            let mut undo = Undo::new(&mut log);
            undo.ctx().push("a");
            undo.push(|l: &mut Vec<&str>| l.push("undo a"));
            undo.push(|l: &mut Vec<&str>| l.push("undo b"));
        }
        assert_eq!(log, ["a", "undo b", "undo a"]);
        let mut log = Vec::new();
        let mut undo = Undo::new(&mut log);
        undo.push(|l: &mut Vec<&str>| l.push("undo"));
        undo.commit();
        assert!(log.is_empty());
    }
}
