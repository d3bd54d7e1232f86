// A request's generated text, token by token, with OpenAI `stop` semantics: the text ends before
// the first stop sequence (which is never sent), and while the text ends in something that could
// still become a stop sequence that part is held back, so a streaming client never receives text
// that a later token turns into a stop.
import { TextStreamer } from '../llama/generate.js';

export class StopTextStream {
  private readonly streamer: TextStreamer;
  private readonly longestStop: number;
  private text = '';
  private sent = 0;
  /** A stop sequence appeared: the text is final and ends before it. */
  stopped = false;

  constructor(
    decode: (ids: readonly number[]) => string,
    private readonly stops: readonly string[],
  ) {
    this.streamer = new TextStreamer(decode);
    this.stops = stops.filter((s) => s !== '');
    this.longestStop = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** Adds a generated token; returns the text that can be sent now (possibly ''). */
  push(id: number): string {
    if (this.stopped) return '';
    const before = this.text.length;
    this.text += this.streamer.push(id);
    return this.release(before, false);
  }

  /** At the end of generation: everything not sent yet (up to a stop sequence). */
  finish(): string {
    if (this.stopped) return this.release(this.text.length, true);
    const before = this.text.length;
    this.text += this.streamer.flush();
    return this.release(before, true);
  }

  /** The whole text so far (ends before the stop sequence once stopped). */
  get fullText(): string {
    return this.text;
  }

  private release(before: number, final: boolean): string {
    if (!this.stopped && this.longestStop > 0) {
      // A stop sequence found now must end in the new text: search from where it could begin.
      const from = Math.max(0, before - this.longestStop + 1);
      let at = -1;
      for (const s of this.stops) {
        const i = this.text.indexOf(s, from);
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
      if (at >= 0) {
        this.stopped = true;
        this.text = this.text.slice(0, Math.max(at, this.sent));
      }
    }
    const end = this.stopped || final ? this.text.length : this.text.length - this.heldBack();
    if (end <= this.sent) return '';
    const piece = this.text.slice(this.sent, end);
    this.sent = end;
    return piece;
  }

  /** Length of the longest end of the text that is a proper prefix of a stop sequence. */
  private heldBack(): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.text.length); k > hold; k--) {
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return hold;
  }
}
